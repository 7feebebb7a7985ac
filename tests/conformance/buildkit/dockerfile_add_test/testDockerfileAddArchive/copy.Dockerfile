
FROM scratch
COPY t.tar.gz /
