
	FROM scratch
	ADD --unpack=false t.tar.gz /
	
