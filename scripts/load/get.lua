-- GET /v1/files/{id}: one of the seeded files (LOAD_IDS, one id a line) at random,
-- so after the first round every read is a cache hit.
dofile((os.getenv("LOAD_LUA_DIR") or "scripts/load") .. "/common.lua")

local requests = {}

-- Built in init(): wrk sets the Host header only then.
function init(args)
  for i, file_id in ipairs(load_ids(os.getenv("LOAD_IDS"))) do
    requests[i] = wrk.format("GET", "/v1/files/" .. file_id)
  end
end

function request()
  return requests[math.random(#requests)]
end
