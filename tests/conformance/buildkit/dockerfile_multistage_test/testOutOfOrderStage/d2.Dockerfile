
FROM busybox AS target
COPY --from=build /d2 /out
# BuildKit: FROM alpine AS build
FROM busybox AS build
COPY /Dockerfile /d2
FROM target
