"""The metadata store: the MetadataStore protocol and its value types
(``protocol``), the one versioned schema both stores share (``schema``),
SQLite (``sqlite``, ``sqlite_schema``) and PostgreSQL (``postgres``, with
its SQL in ``pg_queries``, its URLs in ``pg_url`` and LISTEN/NOTIFY in
``pg_listen``). Every offset-assigning write is one transaction here."""
