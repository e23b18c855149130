"""StreamHouse: a Kafka-like streaming log on S3-compatible object storage.

The public surface is what this module re-exports; everything else lives in
private ``_*`` modules and may change without notice.
"""

import typing as _typing

from ._admin import Admin as Admin
from ._admin import GroupMember as GroupMember
from ._admin import GroupPartitionLag as GroupPartitionLag
from ._admin import MaintenanceReport as MaintenanceReport
from ._admin import PartitionDescription as PartitionDescription
from ._admin import TopicDescription as TopicDescription
from ._admin import open_admin as open_admin
from ._config import metadata_store_from_url as metadata_store_from_url
from ._config import object_store_from_url as object_store_from_url
from ._consumer import CacheStats as CacheStats
from ._consumer import Consumer as Consumer
from ._consumer import RebalanceListener as RebalanceListener
from ._consumer import open_consumer as open_consumer
from ._errors import ClosedError as ClosedError
from ._errors import CommitFailedError as CommitFailedError
from ._errors import ConfigurationError as ConfigurationError
from ._errors import CorruptDataError as CorruptDataError
from ._errors import DeliveryError as DeliveryError
from ._errors import GroupNotEmptyError as GroupNotEmptyError
from ._errors import InvalidArgumentError as InvalidArgumentError
from ._errors import InvalidNameError as InvalidNameError
from ._errors import MetadataError as MetadataError
from ._errors import MetadataUnavailableError as MetadataUnavailableError
from ._errors import ObjectExistsError as ObjectExistsError
from ._errors import ObjectNotFoundError as ObjectNotFoundError
from ._errors import OffsetOutOfRangeError as OffsetOutOfRangeError
from ._errors import PartitionNotFoundError as PartitionNotFoundError
from ._errors import RetriableError as RetriableError
from ._errors import StorageAuthError as StorageAuthError
from ._errors import StorageError as StorageError
from ._errors import StorageUnavailableError as StorageUnavailableError
from ._errors import StreamHouseError as StreamHouseError
from ._errors import TopicExistsError as TopicExistsError
from ._errors import TopicNotFoundError as TopicNotFoundError
from ._metadata.protocol import CatalogueWatch as CatalogueWatch
from ._metadata.protocol import MetadataStore as MetadataStore
from ._metadata.protocol import TopicInfo as TopicInfo
from ._metadata.sqlite import SQLiteMetadataStore as SQLiteMetadataStore
from ._producer import Producer as Producer
from ._producer import open_producer as open_producer
from ._retry import RetryPolicy as RetryPolicy
from ._storage.local import LocalObjectStore as LocalObjectStore
from ._storage.protocol import ObjectInfo as ObjectInfo
from ._storage.protocol import ObjectStore as ObjectStore
from ._storage.s3 import S3ObjectStore as S3ObjectStore
from ._types import CleanupPolicy as CleanupPolicy
from ._types import ConsumedRecord as ConsumedRecord
from ._types import OffsetReset as OffsetReset
from ._types import RecordBatch as RecordBatch
from ._types import RecordMetadata as RecordMetadata
from ._types import SendBatchResult as SendBatchResult
from ._types import TopicPartition as TopicPartition
from ._version import __version__ as __version__

__all__ = [
    "Admin",
    "CacheStats",
    "CatalogueWatch",
    "CleanupPolicy",
    "ClosedError",
    "CommitFailedError",
    "ConfigurationError",
    "ConsumedRecord",
    "Consumer",
    "CorruptDataError",
    "DeliveryError",
    "GroupMember",
    "GroupNotEmptyError",
    "GroupPartitionLag",
    "InvalidArgumentError",
    "InvalidNameError",
    "LocalObjectStore",
    "MaintenanceReport",
    "MetadataError",
    "MetadataStore",
    "MetadataUnavailableError",
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotFoundError",
    "ObjectStore",
    "OffsetOutOfRangeError",
    "OffsetReset",
    "PartitionDescription",
    "PartitionNotFoundError",
    "PostgresMetadataStore",
    "Producer",
    "RebalanceListener",
    "RecordBatch",
    "RecordMetadata",
    "RetriableError",
    "RetryPolicy",
    "S3ObjectStore",
    "SQLiteMetadataStore",
    "SendBatchResult",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailableError",
    "StreamHouseError",
    "TopicDescription",
    "TopicExistsError",
    "TopicInfo",
    "TopicNotFoundError",
    "TopicPartition",
    "metadata_store_from_url",
    "object_store_from_url",
    "open_admin",
    "open_consumer",
    "open_producer",
]

if _typing.TYPE_CHECKING:
    from ._metadata.postgres import PostgresMetadataStore as PostgresMetadataStore


def __getattr__(name: str) -> object:
    # PostgresMetadataStore loads psycopg (0.12 s) when it is first asked
    # for: a process on SQLite, such as each `streamhouse` command on the
    # embedded default, never pays for it.
    if name == "PostgresMetadataStore":
        from ._metadata.postgres import PostgresMetadataStore

        return PostgresMetadataStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "PostgresMetadataStore"})
