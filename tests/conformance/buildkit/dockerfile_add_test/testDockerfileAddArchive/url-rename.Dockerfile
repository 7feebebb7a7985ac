
FROM scratch
ADD {{HTTP}}/t.tar.gz /newname.tar.gz
