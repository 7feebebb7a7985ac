from scratch
env foo=bar
run what