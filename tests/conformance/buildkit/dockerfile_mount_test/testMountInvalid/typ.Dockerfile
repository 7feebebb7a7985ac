
	FROM scratch
	RUN --mount=typ=tmpfs /bin/true
	