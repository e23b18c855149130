"""Logging: lifecycle at INFO, never a line per record, never a credential."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streamhouse import SQLiteMetadataStore, StorageError, open_producer

from ..helpers import Stores, make_s3_store, poll_until
from ..servers.seaweed import S3Server

pytestmark = pytest.mark.anyio


async def test_lifecycle_is_logged_at_info_and_records_never_are(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    """Opening and closing are INFO lines; 3,000 records make no more lines than 3."""
    await stores.meta.create_topic("t", 1)
    caplog.set_level(logging.DEBUG, logger="streamhouse")
    async with stores.producer(linger=0, client_id="p1") as producer:
        await producer.send_batch("t", [b"v"] * 3000, partition=0)
    async with stores.consumer("t", offset_reset="earliest", client_id="c1") as consumer:
        assert len(await poll_until(consumer, 3000)) == 3000
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [m.split(" on ")[0] for m in infos] == [
        "producer p1 opened", "producer p1 closed", "consumer c1 opened", "consumer c1 closed",
    ]  # fmt: skip
    assert "group None, 1 partition(s): t[0]" in infos[2]
    # DEBUG: a line a request (metadata calls, S3 requests, the watermark
    # refresh), whatever the number of records in them.
    assert len(caplog.records) < 300


async def test_credentials_are_never_logged(
    s3_server: S3Server, s3_prefix: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """With S3 at DEBUG, neither the secret key nor a wrong one shows in a log line or error."""
    caplog.set_level(logging.DEBUG, logger="streamhouse")
    meta = SQLiteMetadataStore(tmp_path / "meta.db")
    try:
        await meta.create_topic("t", 1)
        store = make_s3_store(s3_server, s3_prefix)
        stores = Stores(store, meta)
        async with stores.producer(linger=0) as producer:
            await producer.send_batch("t", [b"v"] * 10, partition=0)
        async with stores.consumer("t", offset_reset="earliest") as consumer:
            assert len(await poll_until(consumer, 10)) == 10
        await store.aclose()
        wrong = make_s3_store(s3_server, s3_prefix, secret_key="wrong-secret-0123456789")
        with pytest.raises(StorageError) as refused:
            async with open_producer(storage=wrong, metadata=meta):
                pass
        await wrong.aclose()
    finally:
        await meta.aclose()
    logged = "\n".join(
        [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    )
    assert "opened on S3ObjectStore(" in logged
    for secret in (s3_server.secret_key, "wrong-secret-0123456789"):
        assert secret not in logged
        assert secret not in str(refused.value)
