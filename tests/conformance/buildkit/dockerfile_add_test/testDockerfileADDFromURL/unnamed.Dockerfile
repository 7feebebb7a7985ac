
FROM scratch
ADD {{HTTP}}/ /dest/
