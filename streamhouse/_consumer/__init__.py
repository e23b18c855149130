"""open_consumer(): the facade and the actors behind it (coordinator,
readers, cache) on one nursery; docs/ARCHITECTURE.md draws them."""

from .cache import CacheStats as CacheStats
from .consumer import Consumer as Consumer
from .listener import RebalanceListener as RebalanceListener
from .opening import open_consumer as open_consumer
