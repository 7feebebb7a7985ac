
FROM scratch
ADD --unpack=true {{HTTP}}/t.tar.gz /dest/
