
# BuildKit: FROM alpine AS src
FROM busybox AS src
ADD --keep-git-dir --checksum={{V2}} {{HTTP}}/repo/.git#v0.0.2 /repo
RUN head -c 16 /dev/urandom | base64 > /repo/unique.txt
FROM scratch
COPY --from=src /repo/unique.txt /
