-- wrk script used by scripts/bench: replays pre-generated HTTP requests.
--
--   wrk ... -s bench/replay.lua <url> -- <requests file> <once|cycle> <wrk threads>
--
-- Each line of the requests file is one request: METHOD \t PATH \t HEADERS \t BODY, the headers
-- "Name: value" joined by \31 (ASCII unit separator). Bodies are compact JSON or form data, so
-- they never contain a tab or a newline. Everything is formatted once in init(): building or
-- signing requests inside the timed window would measure Lua instead of the service.
--
-- Thread k (0-based) of N takes lines k, k+N, k+2N…: the threads never share a request.
--   once:  every request is sent at most once (webhook events: a resend would be a duplicate,
--          not a new event). Past the end of its slice a thread sends a request to a path that
--          answers 404, so exhausting the pool shows up as non-2xx answers and as `exhausted`
--          in the result line, and the orchestrator refuses the run. Size the pool instead.
--   cycle: wrap around (status and portal requests may repeat).
--
-- done() prints one machine-readable line, "BENCH_RESULT key=value ...", for the orchestrator.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local requests = {}
local position = 0
local cycle = false
local exhausted_request = nil
-- Globals (not locals) so done() can read them through thread:get().
sent = 0
exhausted = 0

function init(args)
  local path, mode, nthreads = args[1], args[2], tonumber(args[3])
  assert(path and (mode == "once" or mode == "cycle") and nthreads,
         "usage: -- <requests file> <once|cycle> <wrk threads>")
  cycle = (mode == "cycle")
  local line_no = 0
  for line in io.lines(path) do
    if line_no % nthreads == id then
      local method, target, header_list, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      assert(method, "malformed request line " .. line_no)
      local headers = {}
      for header in header_list:gmatch("[^\31]+") do
        local name, value = header:match("^([^:]+):%s*(.*)$")
        headers[name] = value
      end
      if body == "" then body = nil end
      requests[#requests + 1] = wrk.format(method, target, headers, body)
    end
    line_no = line_no + 1
  end
  assert(#requests > 0, "thread " .. id .. " has no requests in " .. path)
  exhausted_request = wrk.format("GET", "/__bench_request_pool_exhausted")
end

function request()
  position = position + 1
  if position > #requests then
    if cycle then
      position = 1
    else
      exhausted = exhausted + 1
      return exhausted_request
    end
  end
  sent = sent + 1
  return requests[position]
end

function done(summary, latency, requests)
  local total_sent, total_exhausted = 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_exhausted = total_exhausted + thread:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d mean_us=%.1f max_us=%d sent=%d exhausted=%d\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean,
    latency.max, total_sent, total_exhausted))
end
