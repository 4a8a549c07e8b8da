-- GET /v1/files/{id}/download: a signed download URL for one of the uploaded seed
-- files (LOAD_IDS, one id a line) at random.
dofile((os.getenv("LOAD_LUA_DIR") or "scripts/load") .. "/common.lua")

local requests = {}

-- Built in init(): wrk sets the Host header only then.
function init(args)
  for i, file_id in ipairs(load_ids(os.getenv("LOAD_IDS"))) do
    requests[i] = wrk.format("GET", "/v1/files/" .. file_id .. "/download")
  end
end

function request()
  return requests[math.random(#requests)]
end
