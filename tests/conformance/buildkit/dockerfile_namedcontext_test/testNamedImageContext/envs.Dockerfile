FROM debian:bookworm
ENV PATH=/foobar:$PATH
ENV FOOBAR=foobar
