
	FROM busybox:latest
	ONBUILD COPY --from=otherstage /testfile /out/foo
	