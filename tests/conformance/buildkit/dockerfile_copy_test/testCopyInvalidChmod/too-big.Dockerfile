
FROM scratch
COPY --chmod=10000 foo /
