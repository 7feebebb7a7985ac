from alpine
env