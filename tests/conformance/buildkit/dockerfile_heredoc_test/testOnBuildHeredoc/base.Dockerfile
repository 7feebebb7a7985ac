
FROM busybox
ONBUILD RUN <<EOF
echo "hello world" >> /dest
EOF
