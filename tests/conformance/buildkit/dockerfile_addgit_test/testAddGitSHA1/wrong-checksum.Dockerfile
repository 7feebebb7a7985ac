	FROM busybox
	ARG REPO="{{HTTP}}/repo/.git"
	ARG TAG="v0.0.3"
	ADD --checksum={{V2}} ${REPO}#${TAG} /faildir
