	FROM busybox
	ARG REPO="{{HTTP}}/repo/.git"
	ARG COMMIT="{{V3}}"
	ADD --keep-git-dir=true --checksum={{V3}} ${REPO}#${COMMIT} /commitdir
	RUN [ -f /commitdir/foo ]
	RUN [ "$(cat /commitdir/foo)" = "foo of v0.0.3" ]
	RUN [ -d /commitdir/.git ]
