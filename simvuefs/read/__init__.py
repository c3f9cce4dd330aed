"""The read path: serving ``read(off, size)`` of immutable artifacts.

``reader`` turns reads into blocks, ``cache`` holds blocks (and the tree's metadata) in
memory. Written against :mod:`simvuefs.backends`' protocol; knows nothing of FUSE.
"""
