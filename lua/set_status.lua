-- set_status.lua — move a loaded event between on_sale, closed and cancelled.
--
-- Holds check the status: only an on_sale event takes new holds; a cancelled
-- event takes no confirmations either.
--
-- KEYS[1] {ev:<id>}:meta
-- ARGV[1] new status: draft | on_sale | closed | cancelled
--
-- Returns JSON {"ok": true, "status", "previous"} or
--   {"ok": false, "code": "event_not_found" | "invalid_request"}.

local allowed = {draft = true, on_sale = true, closed = true, cancelled = true}
if not allowed[ARGV[1]] then
  return cjson.encode({ok = false, code = 'invalid_request', detail = 'unknown status'})
end
local previous = redis.call('HGET', KEYS[1], 'status')
if not previous then return cjson.encode({ok = false, code = 'event_not_found'}) end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
return cjson.encode({ok = true, status = ARGV[1], previous = previous})
