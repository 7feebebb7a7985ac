
FROM scratch
CMD ["test"]
