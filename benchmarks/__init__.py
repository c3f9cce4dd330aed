"""The performance benchmark run by ``scripts/bench`` (not part of the simvuefs runtime).

- :mod:`benchmarks.tools`: the external programs (nginx, Debian's rclone and the venv's
  current one, httpdirfs, fusermount).
- :mod:`benchmarks.profile`: the network of a run: loopback, or the field profile's
  per-connection cap and round trips (nginx and the devserver's WAN switches).
- :mod:`benchmarks.harness`: nginx, the devserver and the FUSE contenders as child
  processes (the devserver and the mounts through the shared :mod:`testbed`), always
  stopped and unmounted at the end.
- :mod:`benchmarks.data`: the devserver data directory, built directly with its Store
  (:mod:`benchmarks.formats` writes its HDF5 and Parquet files).
- :mod:`benchmarks.measure`: samples, result tables and the small timed operations.
- :mod:`benchmarks.context`: what every job gets; :mod:`benchmarks.reads`,
  :mod:`benchmarks.transfer`, :mod:`benchmarks.listing`, :mod:`benchmarks.upload`: the
  jobs, each running its contenders interleaved and returning a table;
  :mod:`benchmarks.jobs`: them by name (and which the field profile runs);
  :mod:`benchmarks.patterns`: the transfer job's small-read patterns (buffered reader,
  mmap, h5py, pyarrow).
- :mod:`benchmarks.targets`: the issues' targets (per profile) checked against the tables.
- :mod:`benchmarks.report`: Markdown tables and each profile's generated block of
  docs/benchmarks.md.
- :mod:`benchmarks.main`: the command line.
"""
