
FROM scratch
ADD t.tar.gz /
