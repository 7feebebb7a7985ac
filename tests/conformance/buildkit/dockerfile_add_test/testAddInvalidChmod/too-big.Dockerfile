
FROM scratch
ADD --chmod=10000 foo /
