"""The judge job queue: jobs (jobs.py), the interface both backends keep (base.py), Redis Streams
(redis_streams.py, its Lua scripts in redis_scripts.py) and the in-process SQLite queue of the embedded default
(local.py)."""
