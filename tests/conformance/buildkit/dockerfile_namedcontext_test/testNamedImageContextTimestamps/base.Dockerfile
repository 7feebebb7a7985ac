# alpine in BuildKit's test.
FROM busybox
RUN echo foo >> /test
