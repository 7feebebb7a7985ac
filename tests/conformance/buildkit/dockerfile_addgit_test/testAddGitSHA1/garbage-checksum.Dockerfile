	FROM busybox
	ARG REPO="{{HTTP}}/repo/.git"
	ARG TAG="v0.0.3"
	ADD --checksum=foobar ${REPO}#${TAG} /faildir
