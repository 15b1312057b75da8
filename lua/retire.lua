-- retire.lua — take a finished event's inventory out of Redis.
--
-- A closed or cancelled event whose sale is over keeps, in Redis, everything
-- it ever needed while it was on sale: the seat map, hold records, each
-- buyer's held and sold counters (the per-customer limit), and the refund
-- markers ("refund:<order id>") that keep a retried refund a replay. None of
-- it is needed once nothing can change without Postgres knowing: the caller
-- (persistence.retire) only asks once the event has been closed or cancelled
-- and started long enough ago, and this script only agrees when, atomically:
--
--   * the event is closed or cancelled in Redis too;
--   * its outbox is empty: the writer has recorded (and deleted) every sale,
--     refund and order change in Postgres;
--   * no hold is live or waiting for a sweep ("h:" entries in the expiries),
--     since a sweep may still have an order to end.
--
-- Then every key of the inventory (and of its waiting room) goes. Should anything touch the event
-- again (a late payment, an organizer's refund, a reader of its seat map),
-- the actor rebuilds it from Postgres (persistence.rebuild), sold seats and
-- per-customer counts included, exactly as after a lost Redis.
--
-- KEYS: the nine of lib.lua, in its order (meta, seats, sections, holds,
-- expiries, customers, outbox, q:passes, q:active), then the waiting room's
-- q and q:waiting.
-- Returns JSON {"ok": true, "retired": true} or
--   {"ok": true, "retired": false, "why": "outbox" | "missing" | "status" | "holds"}
--   (checked in that order: an outbox with entries is never touched).

local K_META, K_EXPIRIES, K_OUTBOX = KEYS[1], KEYS[5], KEYS[7]

local function kept(why)
  return cjson.encode({ok = true, retired = false, why = why})
end

if redis.call('EXISTS', K_OUTBOX) == 1 and redis.call('XLEN', K_OUTBOX) > 0 then
  return kept('outbox')
end
local status = redis.call('HGET', K_META, 'status')
if not status then
  -- Nothing left but (perhaps) an empty stream a writer made again while
  -- this event was being retired: it goes too.
  redis.call('DEL', K_OUTBOX)
  return kept('missing')
end
if status ~= 'closed' and status ~= 'cancelled' then return kept('status') end
for _, member in ipairs(redis.call('ZRANGE', K_EXPIRIES, 0, -1)) do
  if string.sub(member, 1, 2) == 'h:' then return kept('holds') end
end
redis.call('DEL', unpack(KEYS))
return cjson.encode({ok = true, retired = true})
