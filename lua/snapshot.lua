-- snapshot.lua — the event's availability and seat statuses at one version.
--
-- Read-only. Expired holds still show as held until the sweeper publishes
-- their release, so a snapshot always agrees with the change stream.
--
-- KEYS[1] {ev:<id>}:meta
-- KEYS[2] {ev:<id>}:seats
-- KEYS[3] {ev:<id>}:sections
-- ARGV[1] optional "counts": the sections only, no seats (availability reads)
--
-- Returns JSON {"ok": true, "version", "status", "max_per_customer",
--   "sections": [{"code", "kind", "capacity", "available", "held", "sold"}],
--   "seats": {"A-1-1": "held" | "sold", ...}}   (seats not listed are available)
-- or {"ok": false, "code": "event_not_found"}.

local meta = redis.call('HMGET', KEYS[1], 'version', 'status', 'max_per_customer')
if not meta[1] then
  return cjson.encode({ok = false, code = 'event_not_found'})
end
local codes = redis.call('HGET', KEYS[3], 'codes') or ''
local sections = {}
for code in string.gmatch(codes, '[^,]+') do
  local f = redis.call('HMGET', KEYS[3], code .. ':kind', code .. ':cap', code .. ':held', code .. ':sold')
  local cap, held, sold = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  table.insert(sections, {code = code, kind = f[1], capacity = cap,
                          available = cap - held - sold, held = held, sold = sold})
end
local seats = {}
local flat = ARGV[1] == 'counts' and {} or redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  local prefix = string.sub(flat[i + 1], 1, 2)
  if prefix == 'h:' then
    seats[flat[i]] = 'held'
  elseif prefix == 's:' then
    seats[flat[i]] = 'sold'
  end
end
return cjson.encode({ok = true, version = tonumber(meta[1]), status = meta[2],
                     max_per_customer = tonumber(meta[3]), sections = sections, seats = seats})
