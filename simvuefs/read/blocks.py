"""ContentBlocks: how one artifact's content is cut into cached blocks.

Block *i* covers bytes ``[i * block_size, min((i + 1) * block_size, size))``: every block is
full except the last. Blocks are cached in :class:`simvuefs.read.cache.BlockCache` under
``(artifact.checksum or artifact.id, i)``; artifacts are immutable, so equal checksums share
blocks. Shared by the reader (bounded GETs), the read-ahead (streams) and nothing else.
"""

from __future__ import annotations

from simvuefs.models import Artifact
from simvuefs.read.cache import BlockKey


class ContentBlocks:
    """The block geometry of *artifact*'s content of *size* bytes. Immutable."""

    __slots__ = ("artifact", "block_size", "count", "key", "size")

    def __init__(self, artifact: Artifact, size: int, block_size: int) -> None:
        self.artifact = artifact
        self.size = size
        self.block_size = block_size
        self.key = artifact.checksum or artifact.id
        self.count = -(-size // block_size)

    def length(self, index: int) -> int:
        """Return the length of block *index* (the last one may be short)."""
        return min(self.block_size, self.size - index * self.block_size)

    def start(self, index: int) -> int:
        """Return the offset of block *index* in the content."""
        return index * self.block_size

    def cache_key(self, index: int) -> BlockKey:
        """Return the :class:`BlockCache` key of block *index*."""
        return (self.key, index)
