"""The metadata store: the MetadataStore protocol and its value types
(``protocol``), the one versioned schema both stores share (``schema``),
SQLite (``sqlite``, ``sqlite_schema``) and PostgreSQL (``postgres``, with
its SQL in ``pg_queries``, its URLs in ``pg_url`` and LISTEN/NOTIFY in
``pg_listen``). Consumer group membership is one transaction too, the same
code on both stores (``groups``, with its assignor in ``assignor``; the
offset and membership calls in ``sqlite_groups`` and ``pg_groups``). Every
offset-assigning write is one transaction here."""
