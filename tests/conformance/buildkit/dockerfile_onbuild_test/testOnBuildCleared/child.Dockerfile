
	FROM onbuild-cleared-base
	