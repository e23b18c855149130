"""open_producer(): accumulate records, encode segments, upload, commit."""

from .opening import open_producer as open_producer
from .producer import Producer as Producer
