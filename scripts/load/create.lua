-- POST /v1/files: every request creates a new upload, with its own name and SHA-256
-- (LOAD_SALT, the thread id and a counter make them unique across runs and threads).
dofile((os.getenv("LOAD_LUA_DIR") or "scripts/load") .. "/common.lua")
wrk.headers["Content-Type"] = "application/json"

local salt = os.getenv("LOAD_SALT") or "00000000"
local counter = 0

function request()
  counter = counter + 1
  -- 8 + 4 + 12 hex digits, then 40 more: 64 lowercase hex digits.
  local tag = string.format("%s%04x%012x", salt, id or 0, counter)
  local sha256 = tag .. string.sub(string.rep(tag, 2), 1, 40)
  local body = '{"name":"load-' .. tag .. '.bin","size":1048576,"sha256":"' .. sha256
    .. '","content_type":"application/octet-stream","metadata":{"run":"load"}}'
  return wrk.format("POST", "/v1/files", nil, body)
end
