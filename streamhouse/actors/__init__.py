"""The consumer's runtime: coordinator, reader and cache actors on one nursery."""
