-- bench/soak.sh's traffic for wrk: chat completions as JSON (70 %) and as
-- server-sent events (30 %), 80 % on the split route (10 000 sticky users)
-- and 20 % on the caching route (50 temperature-0 questions, so it hits),
-- paced to the rate given as the first script argument (requests a second,
-- over all threads). Every answer must be a 200, and every event stream
-- must end with [DONE]; anything else is counted as a client-visible error.
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local total_rate = tonumber(args[1]) or 1000
  local nthreads = tonumber(args[2]) or 1
  target = total_rate / nthreads
  pause = 10
  second = os.time()
  done_this_second = 0
  statuses = {}
  bad = 0
  broken_streams = 0
  ok = 0
  math.randomseed(os.time() + id * 7919)
end

-- Each second, stretch or shrink the pause between a connection's requests
-- so this thread makes `target` requests a second.
function delay()
  return pause
end

function request()
  local stream = math.random() < 0.3
  local tail = stream and ',"stream":true}' or '}'
  local user = math.random(1, 10000)
  local path, body
  if math.random() < 0.2 then
    path = "/v1/cached/chat/completions"
    body = '{"model":"m","temperature":0,"messages":[{"role":"user","content":"question '
      .. math.random(1, 50) .. '"}]' .. tail
  else
    path = "/v1/chat/completions"
    body = '{"model":"m","messages":[{"role":"user","content":"hello from user '
      .. user .. '"}]' .. tail
  end
  return wrk.format("POST", path, {
    ["content-type"] = "application/json",
    ["x-user-id"] = "user-" .. user,
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= 200 then
    bad = bad + 1
  else
    local ct = headers["content-type"] or headers["Content-Type"] or ""
    if ct:find("event%-stream") and not body:find("%[DONE%]") then
      broken_streams = broken_streams + 1
    else
      ok = ok + 1
    end
  end
  done_this_second = done_this_second + 1
  local now = os.time()
  if now ~= second then
    local seen = done_this_second / (now - second)
    if seen > 0 then
      pause = math.max(0, math.min(1000, pause * seen / target))
      if pause < 1 and seen < target then pause = 1 end
    end
    second = now
    done_this_second = 0
  end
end

function done(summary, latency, requests)
  local all = { bad = 0, broken_streams = 0, ok = 0, statuses = {} }
  for _, t in ipairs(threads) do
    all.bad = all.bad + t:get("bad")
    all.broken_streams = all.broken_streams + t:get("broken_streams")
    all.ok = all.ok + t:get("ok")
    for code, n in pairs(t:get("statuses")) do
      all.statuses[code] = (all.statuses[code] or 0) + n
    end
  end
  local e = summary.errors
  io.write(string.format(
    "SOAK requests=%d ok=%d non200=%d broken_streams=%d connect=%d read=%d write=%d timeout=%d duration_s=%.1f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, all.ok, all.bad, all.broken_streams, e.connect, e.read, e.write,
    e.timeout, summary.duration / 1e6, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000))
  for code, n in pairs(all.statuses) do
    io.write(string.format("SOAK status %d %d\n", code, n))
  end
end
