
FROM scratch
ENV DIGEST={{SHA256}}
ENV LINK={{HTTP}}/foo
ADD --checksum=${DIGEST} ${LINK} /tmp/foo
