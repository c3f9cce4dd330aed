"""A local Simvue-compatible server for demos, tests and benchmarks.

Run it with ``simvuefs devserver --data DIR``. It speaks the part of the Simvue REST API the
official ``simvue`` client uses (``docs/architecture.md``, "Devserver contract"), serves
artifact content through signed, expiring storage URLs with HTTP Range, and has fault
switches for testing clients. Nothing in the filesystem imports this package.
"""
