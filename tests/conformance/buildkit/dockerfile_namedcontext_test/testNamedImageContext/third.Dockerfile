# Replacing a stage that is based on another stage (moby/buildkit#5578).
FROM busybox AS parent
FROM parent AS base
RUN echo base > /out
FROM base
RUN [ -f /etc/debian_version ]
RUN [ ! -f /out ]
