-- confirm.lua — turn a live hold into a sale and append it to the outbox.
--
-- KEYS: the nine event keys of lib.lua. KEYS[7] is the outbox stream the
--       Postgres writer consumes. Selling and appending happen in this one
--       script, so a sale is never in Redis without its outbox entry.
-- ARGV[1] change channel
-- ARGV[2] JSON {"hold_id", "order_id", "meta": {...}}; meta is copied into the
--         outbox entry untouched (amount, currency, payment reference).
--
-- Idempotent on order_id: confirming again with the same order id returns ok,
-- replayed=true, and appends nothing.
-- Outbox entry fields: type=order_confirmed, event_id, order_id, hold_id,
--   customer_id, seats (comma separated) | section, quantity, confirmed_at_ms, meta.
-- Returns JSON {"version", "results": [r]}, r one of
--   {"ok": true, "hold_id", "order_id", "replayed", "outbox_id"?}
--   {"ok": false, "code": "hold_expired" | "already_confirmed" |
--                         "event_not_on_sale" | "invalid_request"}

local op = cjson.decode(ARGV[2])
op.op = 'confirm'
return run({op}, 'confirm')
