
FROM scratch AS main
ADD {{URL}} /repo/
FROM scratch as withsubmod
COPY --from=main /repo/submod/file /repo/foo
FROM scratch AS withgit
COPY --from=main /repo/.git/HEAD /repo/foo
FROM main
		
