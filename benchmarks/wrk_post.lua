-- wrk script: POST one body file with a content type, then print one JSON line of results.
--   wrk -s wrk_post.lua URL -- BODY_FILE CONTENT_TYPE
-- Latencies are microseconds, as wrk measures them; "non2xx" counts answers outside 200-299.

function init(args)
   local file = assert(io.open(args[1], "rb"))
   wrk.method = "POST"
   wrk.body = file:read("*a")
   file:close()
   wrk.headers["Content-Type"] = args[2]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
