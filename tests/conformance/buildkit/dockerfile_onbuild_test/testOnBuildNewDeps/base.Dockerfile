
FROM busybox
# BuildKit: COPY --from=alpine /etc/alpine-release (a file of an image the child never names);
# here Debian's /etc/os-release.
ONBUILD COPY --from=debian:bookworm /etc/os-release /out/alpine-release2
