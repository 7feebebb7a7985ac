from scratch
env foo=bar
copy --from=invalid foo bar
env bar=baz