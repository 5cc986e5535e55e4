-- The harness's chat.lua, except that every tenth request asks a question
-- never asked before (a fresh nonce per wrk process, then a counter), so a
-- cache in front of the upstream sees about 90 % hits and 10 % misses.
local path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
local model = os.getenv("BENCH_MODEL") or "bench-model"
local stream = os.getenv("BENCH_STREAM") == "1"
local users = tonumber(os.getenv("BENCH_USERS") or "1000")

local prepared = {}
local cursor = 0
local sent = 0
local nonce

local function body(question)
   return string.format(
      '{"model":"%s","messages":[{"role":"system","content":"You are a helpful assistant."},'
         .. '{"role":"user","content":"%s"}],"temperature":0.2,"stream":%s}',
      model, question, tostring(stream))
end

local function headers(i)
   return {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer sk-bench",
      ["x-user-id"] = "user-" .. i,
   }
end

function init(args)
   math.randomseed(os.time() + math.floor(os.clock() * 1e6))
   nonce = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
   for i = 1, users do
      prepared[i] = wrk.format("POST", path, headers(i), body("Say hello in one short sentence."))
   end
end

function request()
   cursor = cursor % users + 1
   sent = sent + 1
   if sent % 10 == 0 then
      return wrk.format("POST", path, headers(cursor), body("Question " .. nonce .. "-" .. sent .. "?"))
   end
   return prepared[cursor]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
