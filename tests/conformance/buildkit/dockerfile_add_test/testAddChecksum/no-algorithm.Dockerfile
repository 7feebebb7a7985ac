
FROM scratch
ADD --checksum={{SHA256_HEX}} {{HTTP}}/foo /tmp/foo
