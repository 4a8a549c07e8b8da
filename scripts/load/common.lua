-- Shared by the load scenarios (loaded with dofile by each of them).
--
-- Environment, set by scripts/load.sh for wrk only (never for valet, which refuses
-- unknown VALET_* variables):
--   LOAD_TOKEN   bearer token sent with every request
--   LOAD_COUNT   "1": classify every answer by status (the overload run)
--
-- done() prints one machine-readable line that scripts/load.sh parses:
--   VALET_LOAD requests=… duration_us=… p50_us=… p99_us=… status=… connect=… read=… write=… timeout=…
-- and, with LOAD_COUNT=1, one more:
--   VALET_LOAD_COUNTS ok=… problem503=… other=… empty=… statuses=408:2,500:1
-- `status` is wrk's count of answers with a status of 400 or more; connect, read,
-- write and timeout are its socket errors.

local token = os.getenv("LOAD_TOKEN")
wrk.headers["Authorization"] = token and ("Bearer " .. token) or nil

-- Reads one id a line from a file; refuses an empty or missing file.
function load_ids(path)
  assert(path and path ~= "", "no id file given")
  local file = assert(io.open(path, "r"))
  local ids = {}
  for line in file:lines() do
    if line ~= "" then ids[#ids + 1] = line end
  end
  file:close()
  assert(#ids > 0, "no ids in " .. path)
  return ids
end

-- Every thread gets an id (for unique names) and is kept for done().
local threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  threads[#threads + 1] = thread
end

local counting = os.getenv("LOAD_COUNT") == "1"
if counting then
  -- Plain numbers and one string per thread: wrk's thread:get copies nested tables
  -- wrongly (it crashes), so the statuses travel as "408:2,500:1".
  ok, problem503, other, empty, statuses = 0, 0, 0, 0, ""
  local by_status = {}
  local shown = 0

  local function header(headers, name)
    for key, value in pairs(headers) do
      if string.lower(key) == name then return value end
    end
    return nil
  end

  -- 2xx; 503 as a problem document with Retry-After (the overload answer valet
  -- promises); anything else.
  function response(status, headers, body)
    if status >= 200 and status < 300 then
      ok = ok + 1
      return
    end
    local ctype = header(headers, "content-type") or ""
    if status == 503 and string.find(ctype, "application/problem+json", 1, true) == 1
        and header(headers, "retry-after") and body and body ~= "" then
      problem503 = problem503 + 1
      return
    end
    other = other + 1
    if not body or body == "" then empty = empty + 1 end
    by_status[status] = (by_status[status] or 0) + 1
    local list = {}
    for code, n in pairs(by_status) do list[#list + 1] = code .. ":" .. n end
    statuses = table.concat(list, ",")
    if shown < 3 then
      shown = shown + 1
      io.stderr:write(string.format("unexpected answer %d (%s): %s\n", status, ctype, body or ""))
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "VALET_LOAD requests=%d duration_us=%d p50_us=%d p99_us=%d status=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
  if counting then
    local total = { ok = 0, problem503 = 0, other = 0, empty = 0 }
    local by_status = {}
    for _, thread in ipairs(threads) do
      for key in pairs(total) do
        total[key] = total[key] + thread:get(key)
      end
      for code, n in string.gmatch(thread:get("statuses"), "(%d+):(%d+)") do
        by_status[code] = (by_status[code] or 0) + tonumber(n)
      end
    end
    local list = {}
    for code, n in pairs(by_status) do list[#list + 1] = code .. ":" .. n end
    table.sort(list)
    io.write(string.format("VALET_LOAD_COUNTS ok=%d problem503=%d other=%d empty=%d statuses=%s\n",
      total.ok, total.problem503, total.other, total.empty,
      #list > 0 and table.concat(list, ",") or "-"))
  end
end
