
FROM scratch
ADD {{HTTP}}/t.tar.gz /
