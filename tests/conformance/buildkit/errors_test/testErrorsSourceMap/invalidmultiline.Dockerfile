from scratch
run wh\
at
env bar=baz