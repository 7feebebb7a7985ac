FROM busybox
ARG REPO="{{HTTP}}/repo/.git"
ARG TAG="v0.0.3"
ADD --checksum={{V3}} ${REPO}#${TAG} /nogitdir
RUN [ -f /nogitdir/foo ]
RUN [ "$(cat /nogitdir/foo)" = "foo of v0.0.3" ]
RUN [ ! -d /nogitdir/.git ]
