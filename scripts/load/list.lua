-- GET /v1/files?limit=100: the newest 100 files of the device's root.
dofile((os.getenv("LOAD_LUA_DIR") or "scripts/load") .. "/common.lua")
wrk.path = "/v1/files?limit=100"
