
	FROM scratch
	RUN --mount=type=tmp /bin/true
	