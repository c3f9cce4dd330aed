"""The write path: files written into ``input/`` become attached artifacts.

``upload`` is what the filesystem calls, ``staged`` the per-file state and its transitions,
``writebehind`` the writes queued on their way to the spool disk, ``spool`` the local files
and the journal, ``landing`` the upload sequence and its retries. Written against
:mod:`simvuefs.backends`' protocol; knows nothing of FUSE.
"""
