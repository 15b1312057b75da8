-- release.lua — give a hold's seats or tickets back to sale at once.
--
-- KEYS: the nine event keys of lib.lua.
-- ARGV[1] change channel
-- ARGV[2] JSON {"hold_id", "customer_id"}; an empty customer_id skips the
--         ownership check (operators, the sweeper).
--
-- Idempotent: releasing a hold that already ended returns ok, released=false.
-- Returns JSON {"version", "results": [r]}, r one of
--   {"ok": true, "hold_id", "released", "status"}
--   {"ok": false, "code": "hold_not_found" | "already_confirmed"}

local op = cjson.decode(ARGV[2])
op.op = 'release'
return run({op}, 'release')
