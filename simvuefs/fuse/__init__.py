"""The mount daemon: the FUSE surface and what it shows.

``mount`` runs the daemon's lifecycle, ``fs`` maps FUSE calls onto the inode table
(``inodes``) and the directory tree (``tree``, with ``names``, ``overlay``, ``views`` and
``runinfo``), ``attrs`` builds attributes, and ``stats`` publishes the daemon's counters.
Only this package imports pyfuse3.
"""
