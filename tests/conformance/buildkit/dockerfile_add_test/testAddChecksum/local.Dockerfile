
FROM scratch
ADD --checksum=sha256:f924f9de03dcbb7d617555ef2b4fdd500a63a55420b403d73636298e66483cc3 foo /tmp/foo
