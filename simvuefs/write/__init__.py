"""The write path: files written into ``input/`` become attached artifacts.

``upload`` is what the filesystem calls, ``staged`` the per-file state and its transitions,
``writebehind`` the writes queued on their way to the spool disk, ``spool`` the local files
and the journal, ``landing`` the upload sequence and its retries, ``refusal`` which server
errors refuse an upload for good, ``deletes`` the checked delete of the artifact a rename
replaces, ``mailbox`` the requests of ``simvuefs pending`` to the process holding a spool
(and export marks). Written against
:mod:`simvuefs.backends`' protocol; knows nothing of FUSE.
"""
