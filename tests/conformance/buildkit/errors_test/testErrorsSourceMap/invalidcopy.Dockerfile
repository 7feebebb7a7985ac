from scratch
env foo=bar
copy foo bar
env bar=baz