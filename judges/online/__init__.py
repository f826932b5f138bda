"""Judges on live traffic: ``judges.online`` rules, deterministic sampling, and the span processor,
buffer and shipper that carry sampled calls to the judge queue off the request path.

Modules: settings in gateway/judge_online_settings.py; rules.py (matching), sampling.py, processor.py
(the SpanProcessor), buffer.py, shipper.py, service.py (start and stop in one process), api.py
(``/api/judges/online``) and metrics.py. The queue is the process's (judges/queue/choice.py).
"""
