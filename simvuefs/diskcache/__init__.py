"""The content cache on disk (``--cache-dir``): artifact content kept by its SHA-256, in parts.

``store`` is the directory's layout and every operation on it (synchronous: callers run them
in worker threads); ``usage`` measures and evicts (also used by ``simvuefs cache``, so it
imports nothing that loads httpx); ``source`` is the :class:`CachingSource` the reader reads
through, which serves ranges from disk and stores what it fetches. SEMANTICS.md "Content
cache" is the user's contract.
"""
