"""The metadata store: the MetadataStore protocol, its value types, and the
stores that implement it (SQLite). Every offset-assigning write is one
transaction here."""
