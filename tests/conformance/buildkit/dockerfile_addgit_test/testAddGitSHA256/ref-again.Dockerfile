		FROM busybox
		ARG REPO="{{HTTP}}/repo/.git"
		ARG TAG="v0.0.2"
		ADD --keep-git-dir --checksum={{V2}} ${REPO}#${TAG} /nogitdir
		RUN [ -f /nogitdir/foo ]
		RUN [ "$(cat /nogitdir/foo)" = "foo of v0.0.2" ]
		RUN [ -d /nogitdir/.git ]
