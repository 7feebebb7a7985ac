
# BuildKit: FROM alpine
FROM busybox
ENTRYPOINT []random string
