"""rosterdrop: receives school districts' roster files and keeps one clean roster."""

import os

# polars allocates through its own jemalloc, which by default keeps freed pages for 10 s:
# during an import of millions of records that held 300-500 MB of garbage at the memory peak.
# A background thread hands them back after half a second (measured on 6.8M records: peak
# RSS 1.9 -> 1.5 GB, no slower; returning them at once cost 4 s of system time). jemalloc
# reads this when polars loads, so it is set here, before anything imports polars.
os.environ.setdefault(
    "_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:0"
)
