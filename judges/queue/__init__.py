"""The judge job queue: jobs (jobs.py), the interface both backends keep (base.py), Redis Streams
(redis_streams.py) and the in-process SQLite queue of the embedded default (local.py)."""
