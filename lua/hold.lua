-- hold.lua — hold seats (all or nothing) or a quantity in a general-admission section.
--
-- KEYS: the nine event keys of lib.lua (meta, seats, sections, holds,
--       expiries, customers, outbox, q:passes, q:active), all tagged {ev:<id>}.
-- ARGV[1] channel to publish the change set on ({ev:<id>}:changes)
-- ARGV[2] JSON {"hold_id", "customer_id", "ttl_ms", "seats": [...]}
--         or   {"hold_id", "customer_id", "ttl_ms", "section", "quantity"}
--
-- Idempotent on hold_id: a repeat by the same customer returns the first
-- result (replayed=true) and changes nothing.
--
-- Returns JSON {"version", "results": [r]} where r is
--   {"ok": true, "hold_id", "customer_id", "seats"|"section", "quantity",
--    "expires_at_ms", "status", "replayed"}
--   or {"ok": false, "code": ...}, code one of:
--   event_not_found, event_not_on_sale, hold_id_conflict, hold_expired,
--   invalid_request, duplicate_seat, unknown_seat, unknown_section,
--   wrong_section_kind, invalid_quantity, customer_limit, queue_pass_required,
--   queue_pass_invalid,
--   seats_unavailable (+ "unavailable": [...]), sold_out (+ "available").

local op = cjson.decode(ARGV[2])
op.op = 'hold'
return run({op}, 'hold')
