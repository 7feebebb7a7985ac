FROM busybox AS base
RUN cat /etc/debian_version > /out
FROM scratch
COPY --from=base /out /
