"""Where runs and artifacts come from: a Simvue server or the official client's offline cache.

``protocol`` is the contract the layers above are written against; ``client`` (over
``transport``, the only users of httpx) and ``offline`` (over ``offline_cache`` and
``offline_drafts``) satisfy it.
"""
