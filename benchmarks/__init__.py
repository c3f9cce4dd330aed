"""The performance benchmark run by ``scripts/bench`` (not part of the simvuefs runtime).

- :mod:`benchmarks.tools`: the external programs (nginx, rclone, httpdirfs, fusermount).
- :mod:`benchmarks.harness`: nginx, the devserver and the FUSE contenders as child
  processes (the devserver and the mounts through the shared :mod:`testbed`), always
  stopped and unmounted at the end.
- :mod:`benchmarks.data`: the devserver data directory, built directly with its Store.
- :mod:`benchmarks.measure`: samples, result tables and the small timed operations.
- :mod:`benchmarks.context`: what every job gets; :mod:`benchmarks.reads`,
  :mod:`benchmarks.listing`, :mod:`benchmarks.upload`: the jobs, each running its
  contenders interleaved and returning a table; :mod:`benchmarks.jobs`: them by name.
- :mod:`benchmarks.targets`: the issue's targets checked against the tables.
- :mod:`benchmarks.report`: Markdown tables and the generated block of docs/benchmarks.md.
- :mod:`benchmarks.main`: the command line.
"""
