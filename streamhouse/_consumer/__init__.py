"""open_consumer(): the facade and the actors behind it (coordinator,
readers, cache) on one nursery."""

from .cache import CacheStats as CacheStats
from .consumer import Consumer as Consumer
from .consumer import open_consumer as open_consumer
