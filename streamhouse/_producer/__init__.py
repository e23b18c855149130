"""open_producer(): accumulate records, encode segments, upload, commit."""

from .producer import Producer as Producer
from .producer import open_producer as open_producer
