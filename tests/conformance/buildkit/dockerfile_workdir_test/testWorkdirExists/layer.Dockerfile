FROM busybox
RUN mkdir /mydir
WORKDIR /mydir
WORKDIR /
