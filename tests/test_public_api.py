"""The public surface: what streamhouse exports, and nothing private leaks."""

from __future__ import annotations

import streamhouse


def test_all_lists_exactly_the_public_names() -> None:
    """__all__ is sorted and names every public attribute of the package."""
    public = {name for name in dir(streamhouse) if not name.startswith("_")}
    public -= {"actors"}  # a subpackage, imported for its side of the runtime
    assert sorted(streamhouse.__all__) == streamhouse.__all__
    assert set(streamhouse.__all__) == public


def test_every_error_derives_from_the_root() -> None:
    """Every exported exception class is a StreamHouseError."""
    errors = [
        obj
        for obj in vars(streamhouse).values()
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert len(errors) > 10
    assert all(issubclass(e, streamhouse.StreamHouseError) for e in errors)


def test_retriable_errors_are_marked() -> None:
    """Transient failures are RetriableError; permanent ones are not."""
    assert issubclass(streamhouse.StorageUnavailableError, streamhouse.RetriableError)
    assert issubclass(streamhouse.MetadataUnavailableError, streamhouse.RetriableError)
    assert not issubclass(streamhouse.StorageAuthError, streamhouse.RetriableError)
    assert not issubclass(streamhouse.CorruptDataError, streamhouse.RetriableError)
