
FROM busybox
ONBUILD RUN mkdir -p /out && echo -n yes >> /out/didrun
