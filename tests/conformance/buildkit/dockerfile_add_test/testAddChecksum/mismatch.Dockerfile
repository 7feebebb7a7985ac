
FROM scratch
ADD --checksum=sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 {{HTTP}}/foo /tmp/foo
