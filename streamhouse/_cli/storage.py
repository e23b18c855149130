"""``streamhouse storage create-bucket``: the bucket a fresh S3 server (MinIO) lacks."""

from __future__ import annotations

import argparse

from .._config import object_store_from_url
from .._errors import InvalidArgumentError
from .._storage.s3 import S3ObjectStore
from .args import Subparsers, add_command, add_group
from .common import Cli

__all__ = ["create_bucket", "register"]


async def create_bucket(args: argparse.Namespace, cli: Cli) -> None:
    """Create the bucket of ``--storage s3://bucket/prefix``; one that exists is fine."""
    if args.storage is None:
        raise InvalidArgumentError(
            "creating a bucket needs --storage s3://bucket/prefix (the embedded default is a "
            "local directory)"
        )
    store = object_store_from_url(args.storage)
    try:
        if not isinstance(store, S3ObjectStore):
            raise InvalidArgumentError(
                f"only s3:// storage has a bucket to create, not {args.storage!r}"
            )
        await store.create_bucket()
        cli.out.say(f"bucket {store.bucket} is ready at {store.endpoint}")
    finally:
        await store.aclose()


def register(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    """Add ``storage`` and its actions to the command parser."""
    actions = add_group(commands, "storage", "prepare object storage")
    p = add_command(
        actions, "create-bucket", "create the --storage s3:// URL's bucket if missing", common
    )
    p.set_defaults(run=create_bucket)
