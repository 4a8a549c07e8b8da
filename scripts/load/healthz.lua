-- GET /healthz: the HTTP floor (no token, no database, no limits).
dofile((os.getenv("LOAD_LUA_DIR") or "scripts/load") .. "/common.lua")
wrk.headers["Authorization"] = nil
