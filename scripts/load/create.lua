-- wrk script: every request creates an upload (POST /v1/files) with the token
-- from the VALET_LOAD_TOKEN environment variable.
local token = os.getenv("VALET_LOAD_TOKEN")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.body = '{"name":"load.bin","size":1048576,"sha256":"'
  .. string.rep("ab", 32) .. '","metadata":{"run":"load"}}'

local failures = 0
function response(status, headers, body)
  if status ~= 201 then
    failures = failures + 1
    if failures <= 3 then io.stderr:write("unexpected " .. status .. ": " .. body .. "\n") end
  end
end
