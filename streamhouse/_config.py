"""Where the stores come from when the user does not say: the embedded default.

``storage=`` takes an ObjectStore or a URL, ``metadata=`` a MetadataStore or
a URL. With neither given, both live in one local data directory,
``$STREAMHOUSE_HOME`` or else ``./streamhouse-data``: ``objects/`` and
``metadata.db``. Stores built here from URLs or defaults are owned, and
closed, by whoever asked for them; stores passed in are left open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from ._metastore import MetadataStore, metadata_store_from_url
from ._metastore_sqlite import SQLiteMetadataStore
from ._objectstore import LocalObjectStore, ObjectStore, object_store_from_url

__all__ = ["data_home", "open_stores"]


def data_home() -> Path:
    """The embedded default's data directory."""
    return Path(os.environ.get("STREAMHOUSE_HOME") or "streamhouse-data")


@contextlib.asynccontextmanager
async def open_stores(
    storage: ObjectStore | str | None, metadata: MetadataStore | str | None
) -> AsyncIterator[tuple[ObjectStore, MetadataStore]]:
    """Yield the two stores, building (and later closing) those given as URLs."""
    owned: list[ObjectStore | MetadataStore] = []
    try:
        if storage is None:
            storage = LocalObjectStore(data_home() / "objects")
            owned.append(storage)
        elif isinstance(storage, str):
            storage = object_store_from_url(storage)
            owned.append(storage)
        if metadata is None:
            metadata = SQLiteMetadataStore(data_home() / "metadata.db")
            owned.append(metadata)
        elif isinstance(metadata, str):
            metadata = metadata_store_from_url(metadata)
            owned.append(metadata)
        yield storage, metadata
    finally:
        for store in reversed(owned):
            await store.aclose()
