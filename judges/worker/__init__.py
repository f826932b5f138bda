"""The judge workers: take jobs from a JobQueue (judges/queue/), run the judge, ack once the assessment is
committed (loop.py); what a job judges (items.py); their metrics (metrics.py); ``gateway judges worker``
(process.py)."""
