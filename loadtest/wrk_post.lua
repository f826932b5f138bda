-- wrk script: POST the body in $WRK_BODY_FILE (JSON) and print a machine-readable summary.
--
--   WRK_BODY_FILE=body.json wrk -t1 -c16 -d10s -s loadtest/wrk_post.lua http://127.0.0.1:8080/invocations
--
-- The last line of wrk's output is "BENCH_JSON {...}" with requests, duration, socket errors,
-- non-2xx/3xx answers (wrk counts statuses > 399) and latency percentiles in microseconds.
-- No response() hook: defining one makes wrk parse every response in Lua and slows it down.

local path = os.getenv("WRK_BODY_FILE")
if path then
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = os.getenv("WRK_CONTENT_TYPE") or "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50": %.1f, "p90": %.1f, "p99": %.1f, "max": %.1f, "mean": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
