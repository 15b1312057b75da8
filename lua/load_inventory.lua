-- load_inventory.lua — put an event's inventory into Redis, once.
--
-- KEYS[1] {ev:<id>}:meta      hash  version, status, max_per_customer, max_held, event_id
-- KEYS[2] {ev:<id>}:seats     hash  seat id -> "a" (available)
-- KEYS[3] {ev:<id>}:sections  hash  "codes", "<code>:kind|cap|held|sold|rows|seats_per_row"
-- KEYS[4] {ev:<id>}:customers hash  "<customer>:sold" (tickets bought, for the limit)
-- KEYS[5] {ev:<id>}:holds     hash  "refund:<order id>" -> refund time (lib.lua's refund markers)
-- KEYS[6] {ev:<id>}:q         hash  the waiting room's settings, if any (lua/queue.lua):
--                                  meta.queue and meta.queue_since are copied from them
-- ARGV[1] event id
-- ARGV[2] status (on_sale, draft, closed, cancelled)
-- ARGV[3] max tickets per customer (0: no limit)
-- ARGV[4] JSON array of sections, in display order:
--         {"code": "A", "kind": "seated", "rows": R, "seats_per_row": S}
--         {"code": "FLOOR", "kind": "general", "capacity": N}
-- ARGV[6] optional: max places one customer may hold at once (0 or absent: no cap)
-- ARGV[5] optional JSON of what is already sold, when rebuilding from Postgres:
--         {"seats": {"A-1-1": "<order id>", ...}, "general": {"FLOOR": n, ...},
--          "customers": {"<customer>": n, ...}, "refunds": {"<order id>": ms, ...},
--          "version": v}
--         Sold seats and counts, and the refund markers of orders already
--         refunded (so a retried refund stays a replay), are written in the
--         same script: the inventory never shows a sold seat as free, nor a
--         refunded order as refundable; the version starts at v.
--
-- Seat ids are "<code>-<row>-<seat>", rows and seats counted from 1.
-- Idempotent: if the event is already loaded nothing changes.
-- Returns JSON {"ok": true, "loaded": true|false, "version", "seats"}
--   or {"ok": false, "code": "invalid_inventory", "detail"}.

if redis.call('HEXISTS', KEYS[1], 'version') == 1 then
  return cjson.encode({ok = true, loaded = false,
                       version = tonumber(redis.call('HGET', KEYS[1], 'version'))})
end

local function bad(detail)
  return cjson.encode({ok = false, code = 'invalid_inventory', detail = detail})
end

local function positive_int(v)
  return type(v) == 'number' and v >= 1 and v == math.floor(v)
end

local sections = cjson.decode(ARGV[4])
if type(sections) ~= 'table' or #sections == 0 then return bad('no sections') end
local codes, seen = {}, {}
for _, s in ipairs(sections) do
  if type(s.code) ~= 'string' or not string.match(s.code, '^[%w_]+$') then
    return bad('section codes are letters, digits and _')
  end
  if seen[s.code] then return bad('duplicate section ' .. s.code) end
  seen[s.code] = true
  if s.kind == 'seated' then
    if not positive_int(s.rows) or not positive_int(s.seats_per_row) then
      return bad('seated section ' .. s.code .. ' needs rows and seats_per_row')
    end
  elseif s.kind == 'general' then
    if not positive_int(s.capacity) then
      return bad('general section ' .. s.code .. ' needs a capacity')
    end
  else
    return bad('section kind is seated or general')
  end
  table.insert(codes, s.code)
end

local total_seats = 0
for _, s in ipairs(sections) do
  local cap = s.capacity
  if s.kind == 'seated' then
    cap = s.rows * s.seats_per_row
    local chunk = {}
    for row = 1, s.rows do
      for seat = 1, s.seats_per_row do
        table.insert(chunk, s.code .. '-' .. row .. '-' .. seat)
        table.insert(chunk, 'a')
        if #chunk >= 2000 then
          redis.call('HSET', KEYS[2], unpack(chunk))
          chunk = {}
        end
      end
    end
    if #chunk > 0 then redis.call('HSET', KEYS[2], unpack(chunk)) end
    total_seats = total_seats + cap
    redis.call('HSET', KEYS[3], s.code .. ':rows', s.rows, s.code .. ':seats_per_row', s.seats_per_row)
  end
  redis.call('HSET', KEYS[3], s.code .. ':kind', s.kind, s.code .. ':cap', cap,
             s.code .. ':held', 0, s.code .. ':sold', 0)
end
redis.call('HSET', KEYS[3], 'codes', table.concat(codes, ','))

local version = 1
if ARGV[5] and ARGV[5] ~= '' then
  local sold = cjson.decode(ARGV[5])
  local seated_sold = {}
  for seat, order_id in pairs(sold.seats or {}) do
    local code = string.match(seat, '^(.+)%-%d+%-%d+$')
    if redis.call('HEXISTS', KEYS[2], seat) == 1 then
      redis.call('HSET', KEYS[2], seat, 's:' .. order_id)
      seated_sold[code] = (seated_sold[code] or 0) + 1
    end
  end
  for code, n in pairs(seated_sold) do redis.call('HSET', KEYS[3], code .. ':sold', n) end
  for code, n in pairs(sold.general or {}) do
    if seen[code] then redis.call('HSET', KEYS[3], code .. ':sold', n) end
  end
  for customer, n in pairs(sold.customers or {}) do
    redis.call('HSET', KEYS[4], customer .. ':sold', n)
  end
  for order_id, at_ms in pairs(sold.refunds or {}) do
    redis.call('HSET', KEYS[5], 'refund:' .. order_id, at_ms)
  end
  version = tonumber(sold.version) or 1
end
-- The waiting room, if its settings came first (lua/queue.lua): holds need
-- a pass from the moment the inventory exists, never a moment later.
local queue = KEYS[6] and redis.call('HMGET', KEYS[6], 'on', 'since') or {}
redis.call('HSET', KEYS[1], 'event_id', ARGV[1], 'status', ARGV[2],
           'max_per_customer', tonumber(ARGV[3]) or 0, 'max_held', tonumber(ARGV[6]) or 0,
           'queue', queue[1] == '1' and '1' or '0', 'queue_since', tonumber(queue[2]) or 0,
           'version', version)
return cjson.encode({ok = true, loaded = true, version = version, seats = total_seats})
