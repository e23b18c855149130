"""URLs -> stores: the one module that knows every backend.

``object_store_from_url`` and ``metadata_store_from_url`` turn URLs into
stores; protocol modules never import their implementations, so the
factories live here, above both.

``storage=`` takes an ObjectStore or a URL, ``metadata=`` a MetadataStore or
a URL. With neither given, both live in one local data directory,
``$STREAMHOUSE_HOME`` or else ``./streamhouse-data``: ``objects/`` and
``metadata.db``. Stores built here from URLs or defaults are owned, and
closed, by whoever asked for them; stores passed in are left open.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

from ._errors import ConfigurationError
from ._metadata.metered import metered_metadata
from ._metadata.pg_url import redact
from ._metadata.protocol import MetadataStore
from ._metadata.sqlite import SQLiteMetadataStore
from ._metrics import ClientMetrics
from ._storage.credentials import (
    AwsCredentialChain,
    CredentialProvider,
    Credentials,
    StaticCredentials,
    botocore_available,
    profile_region,
)
from ._storage.local import LocalObjectStore
from ._storage.metered import MeteredObjectStore
from ._storage.protocol import ObjectStore
from ._storage.s3 import S3ObjectStore

__all__ = [
    "data_home",
    "open_metered_stores",
    "metadata_store_from_url",
    "object_store_from_url",
    "open_stores",
    "redact_url",
]


def data_home() -> Path:
    """The embedded default's data directory."""
    return Path(os.environ.get("STREAMHOUSE_HOME") or "streamhouse-data")


@contextlib.asynccontextmanager
async def open_stores(
    storage: ObjectStore | str | None,
    metadata: MetadataStore | str | None,
    *,
    create_metadata: bool = True,
) -> AsyncIterator[tuple[ObjectStore, MetadataStore]]:
    """Yield the two stores, building (and later closing) those given as URLs.

    ``create_metadata=False`` builds the metadata store with ``create=False``
    (see ``metadata_store_from_url``): read-only tools make nothing.
    """
    owned: list[ObjectStore | MetadataStore] = []
    try:
        if storage is None:
            storage = LocalObjectStore(data_home() / "objects")
            owned.append(storage)
        elif isinstance(storage, str):
            storage = object_store_from_url(storage)
            owned.append(storage)
        if metadata is None:
            metadata = SQLiteMetadataStore(data_home() / "metadata.db", create=create_metadata)
            owned.append(metadata)
        elif isinstance(metadata, str):
            metadata = metadata_store_from_url(metadata, create=create_metadata)
            owned.append(metadata)
        yield storage, metadata
    finally:
        for store in reversed(owned):
            await store.aclose()


@contextlib.asynccontextmanager
async def open_metered_stores(
    storage: ObjectStore | str | None, metadata: MetadataStore | str | None, metrics: ClientMetrics
) -> AsyncIterator[tuple[ObjectStore, MetadataStore, str]]:
    """The two stores (as ``open_stores``), measured for a client's ``metrics``, and
    what a log line says of them (their reprs, which hold no credentials)."""
    async with open_stores(storage, metadata) as (store, meta):
        where = f" on {store!r} and {meta!r}"
        yield (
            MeteredObjectStore(store, metrics.storage()),
            metered_metadata(meta, metrics.metadata()),
            where,
        )


def object_store_from_url(
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    session_token: str | None = None,
) -> ObjectStore:
    """Build a store from ``s3://bucket/prefix`` or ``file:///path``.

    For S3, arguments win over the environment variables AWS's own SDKs read:
    ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, ``AWS_REGION`` /
    ``AWS_DEFAULT_REGION``, then (with the ``streamhouse[aws]`` extra) the
    ``region`` of ``AWS_PROFILE`` (or ``default``) in the shared config file,
    else ``us-east-1``. Credentials are found in the SDKs' order: the
    arguments; ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
    ``AWS_SESSION_TOKEN``; then, with the ``streamhouse[aws]`` extra, the rest
    of AWS's chain (``AWS_PROFILE`` and the shared files, web identity,
    container credentials, the instance metadata service), looked up at the
    first request and refreshed before they expire.

    Raises:
        ConfigurationError: the URL, the endpoint or a credential is missing or
            malformed.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"storage URL must be a str, not {type(url).__name__}")
    try:
        parsed = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigurationError(f"storage URL {url!r} is malformed: {exc}") from exc
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"file URL {url!r} must be file:///absolute/path")
        path = urllib.parse.unquote(parsed.path)
        if not path:
            raise ConfigurationError(f"file URL {url!r} has no path")
        return LocalObjectStore(Path(path))
    if parsed.scheme == "s3":
        bucket = parsed.netloc
        if not bucket:
            raise ConfigurationError(f"S3 URL {url!r} has no bucket; use s3://bucket/prefix")
        env = os.environ
        endpoint = endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        region = region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if not region and botocore_available():
            region = profile_region()
        region = region or "us-east-1"
        if not endpoint:
            endpoint = f"https://s3.{region}.amazonaws.com"
        return S3ObjectStore(
            bucket=bucket,
            prefix=parsed.path.strip("/"),
            endpoint=endpoint,
            region=region,
            credentials=_credentials(access_key, secret_key, session_token),
        )
    raise ConfigurationError(
        f"unsupported storage URL {url!r}; use s3://bucket/prefix or file:///path"
    )


def _credentials(
    access_key: str | None, secret_key: str | None, session_token: str | None
) -> CredentialProvider:
    """The first source of AWS's chain that has credentials, as far as known now.

    Arguments and AWS_* variables make fixed credentials with no dependency;
    anything further down the chain needs botocore and is resolved lazily.
    """
    env = os.environ
    if not (access_key and secret_key):
        # A session token belongs to the keys it came with: the variable's
        # only goes with keys from the variables.
        session_token = session_token or env.get("AWS_SESSION_TOKEN")
    access_key = access_key or env.get("AWS_ACCESS_KEY_ID")
    secret_key = secret_key or env.get("AWS_SECRET_ACCESS_KEY")
    if access_key and secret_key:
        return StaticCredentials(Credentials(access_key, secret_key, session_token or None))
    if access_key or secret_key:
        given, missing = (
            ("an access key", "a secret key") if access_key else ("a secret key", "an access key")
        )
        raise ConfigurationError(
            f"S3 credentials are incomplete: {given} without {missing} (arguments or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
        )
    if not botocore_available():
        raise ConfigurationError(
            "S3 needs credentials: pass access_key and secret_key, set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or install streamhouse[aws] to find them as AWS's SDKs do "
            "(AWS_PROFILE, web identity, container and instance roles)"
        )
    return AwsCredentialChain()


def metadata_store_from_url(url: str, *, create: bool = True) -> MetadataStore:
    """Build a store from a metadata URL.

    - ``sqlite:///relative.db`` or ``sqlite:////absolute.db``;
    - ``postgresql://user:password@host:port/dbname?schema=NAME`` (also
      ``postgres://``): everything but ``schema`` goes to libpq as it is, so
      PGHOST, PGPASSWORD, ~/.pgpass and the like work; ``schema`` defaults
      to ``streamhouse``.

    Args:
        create: make what is missing (the SQLite file and its directory;
            the PostgreSQL schema and tables) at the first call. Read-only
            tools pass False: then nothing is created, a missing SQLite file
            reads as an empty store, and a missing PostgreSQL schema is a
            MetadataError.

    Raises:
        ConfigurationError: the URL is malformed or of an unknown kind.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "sqlite":
        if parsed.netloc:
            raise ConfigurationError(
                f"SQLite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs.db"
            )
        path = urllib.parse.unquote(parsed.path)[1:]  # the third slash separates
        if not path:
            raise ConfigurationError(f"SQLite URL {url!r} has no path")
        return SQLiteMetadataStore(Path(path), create=create)
    if parsed.scheme in ("postgres", "postgresql"):
        from ._metadata.postgres import PostgresMetadataStore  # (psycopg: only when used)

        return PostgresMetadataStore(url, create=create)
    raise ConfigurationError(
        f"unsupported metadata URL {parsed.scheme + '://...' if parsed.scheme else url!r}; use "
        "sqlite:///path/to/meta.db or postgresql://user@host/dbname"
    )


def redact_url(url: str) -> str:
    """``url`` fit for a log line or a message: a password it holds (a
    PostgreSQL URL's, in its user part or its query) becomes ``***``."""
    scheme = urllib.parse.urlsplit(url).scheme
    return redact(url) if scheme in ("postgres", "postgresql") else url
