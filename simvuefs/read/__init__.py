"""The read path: serving ``read(off, size)`` of immutable artifacts.

``reader`` turns reads into blocks (``blocks``: the geometry of one content) and fetches
missing ones with bounded GETs; ``readahead`` streams ahead of sequential readers within a
shared budget; ``verify`` checks what handles read in order against the sha256; ``cache``
holds blocks (and the tree's metadata) in memory. Written against :mod:`simvuefs.backends`'
protocol; knows nothing of FUSE.
"""
