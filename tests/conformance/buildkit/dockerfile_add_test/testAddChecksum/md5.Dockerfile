
FROM scratch
ADD --checksum=md5:7e55db001d319a94b0b713529a756623 {{HTTP}}/foo /tmp/foo
