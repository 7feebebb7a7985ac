
FROM scratch
ADD --checksum=unknown:{{SHA256_HEX}} {{HTTP}}/foo /tmp/foo
