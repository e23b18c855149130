"""Object storage: the ObjectStore protocol, a local directory, S3 over httpx,
and the object-key scheme. Nothing here knows about topics or offsets."""
