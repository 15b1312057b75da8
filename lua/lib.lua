-- lib.lua — shared inventory logic, prepended to every mutating script.
--
-- This file is not a script of its own: engine/scripts.py loads it in front of
-- hold.lua, release.lua, confirm.lua, sweep.lua and batch.lua, so that the
-- rules of a hold live in one place and every operation file stays a few lines.
--
-- KEYS (the same nine, in this order, for every mutating script):
--   1 {ev:<id>}:meta       hash   version, status, max_per_customer, max_held, event_id
--   2 {ev:<id>}:seats      hash   seat id -> "a" | "h:<hold id>" | "s:<order id>"
--   3 {ev:<id>}:sections   hash   "codes" -> "A,FLOOR"; "<code>:kind" -> seated|general,
--                                 "<code>:cap", "<code>:held", "<code>:sold"
--   4 {ev:<id>}:holds      hash   hold id -> JSON {c, q, e, st, seats? | sec?, o?, ca?, ra?,
--                                 ord?} (st: held | released | expired | confirmed |
--                                 refunded | refused: a remembered refusal, fp, r;
--                                 ca/ra: when sold/refunded, in ms; ord: the
--                                 order placed on the hold, see op_order);
--                                 "refund:<order id>" -> refund time (ms), kept for good
--   5 {ev:<id>}:expiries   zset   "h:<hold id>" scored by expiry (ms),
--                                 "g:<hold id>" scored by when its record may be forgotten
--   6 {ev:<id>}:customers  hash   "<customer>:held", "<customer>:sold", "<customer>:holds"
--   7 {ev:<id>}:outbox     stream confirmed sales (order_confirmed) and refunds
--                                 (order_refunded), read by the Postgres writer
--   8 {ev:<id>}:q:passes   hash   the waiting room's admissions (lua/queue.lua):
--                                 customer -> "<pass nonce>:<pass expiry ms>"
--   9 {ev:<id>}:q:active   zset   admitted customers scored by when their place
--                                 in the sale ends (the pass's expiry, or their
--                                 hold's end once they hold)
--
-- Operations (OPERATIONS, applied by run(); one JSON object each):
--   hold     {hold_id, customer_id, ttl_ms, seats | section + quantity, fp?,
--            qp?, qi?, qe?, qx?}
--            While the event's waiting room is on (meta.queue = 1), a hold
--            needs its buyer's queue pass: qp its nonce, qi/qe when it was
--            issued and expires (ms), from the pass the API verified; it must
--            match the admission recorded in q:passes and be unexpired
--            (queue_pass_required / queue_pass_invalid). qx: a hold the engine
--            makes itself for someone (no pass). A pass issued before the
--            waiting room was rebuilt (meta.queue_since) stands on its own
--            fp: the request's fingerprint (Idempotency-Key): a hold id seen
--            with another fp fails idempotency_key_reused, and a refusal is
--            remembered (st = refused) and replayed to a retry
--   release  {hold_id, customer_id?}
--   confirm  {hold_id, order_id, meta?} sells a live hold; outbox order_confirmed.
--            With late=true (a payment that came after the hold lapsed): if the
--            hold is expired or released (or its record is gone), the same seats
--            or GA places are sold to order_id if they are free now, and the
--            outbox entry carries late=1. customer_id and seats | section +
--            quantity are only used when the record is gone.
--            Fails seats_unavailable {unavailable} / sold_out then, and
--            customer_limit when the sale would take the buyer past the
--            event's per-customer limit (held and sold count alike).
--   extend   {hold_id, customer_id, until_ms} keeps a live hold until until_ms
--            (never earlier than it already was): the payment window.
--   order    {hold_id, customer_id, order_id, until_ms, amount_cents, currency, items,
--            payment_intent?, provider?} places the order of a live hold (one per
--            hold) and keeps the hold until until_ms (the payment window): the
--            record gains ord = {id, amt, cur, items, pi, prov, at, pay, fin?};
--            outbox order_placed. Fails hold_not_found, hold_expired,
--            order_exists {order_id}, event_not_on_sale {status} (cancelled).
--   end      {hold_id, order_id, status = cancelled | refunded, reason, stripe_event?}
--            an order that will never be paid for its seats: the hold (if still
--            held) is released and ord.fin = {st, why, at}; outbox order_ended
--            (also when the record is gone, so Postgres ends it). Once per order;
--            fails already_confirmed once the order was sold.
--   payment  {hold_id, order_id, status} notes the payment's status on the order
--            (e.g. failed: another card may be tried); outbox payment_updated.
--   refund   {order_id, hold_id, seats | section + quantity, sold_confirmed?}
--            the order's seats (those still "s:<order id>") or GA places go back
--            on sale; once per order ("refund:<order id>" in the holds hash makes
--            a second one a replay); outbox order_refunded. Without the hold's
--            record a GA refund is taken on the caller's word (sold_confirmed),
--            since nothing else in Redis says which order has which places.
--            Fails order_not_sold. Allowed whatever the event's status.
--
-- Time comes from the server (TIME): a hold whose expiry has passed is free to
-- every script even if no sweep has run yet; a sweep only makes that visible.
--
-- Every script that changes anything bumps meta.version by exactly one and
-- publishes {version, changes} on the channel given as ARGV[1].

local K_META, K_SEATS, K_SECTIONS, K_HOLDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_EXPIRIES, K_CUSTOMERS, K_OUTBOX = KEYS[5], KEYS[6], KEYS[7]
local K_PASSES, K_ACTIVE = KEYS[8], KEYS[9]
local CHANNEL = ARGV[1]

-- A released, expired or confirmed hold is remembered this long, so that a
-- retried request with the same hold id is answered, not applied twice.
local RECORD_RETENTION_MS = 24 * 3600 * 1000
local RECLAIM_PER_CALL = 64
local MAX_SEATS_PER_HOLD = 100

local NOW = (function()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end)()

-- ---------------------------------------------------------------- changes

local changed_seats, changed_seat_order = {}, {}
local changed_sections, changed_section_order = {}, {}

local function section_changed(code)
  if not changed_sections[code] then
    changed_sections[code] = true
    table.insert(changed_section_order, code)
  end
end

local function seat_changed(seat, status)
  if changed_seats[seat] == nil then
    table.insert(changed_seat_order, seat)
  end
  changed_seats[seat] = status
end

local function section_of(seat)
  return string.match(seat, '^(.+)%-%d+%-%d+$')
end

-- Section counters are read once per script and written back once, in
-- finish(): a batch of hundreds of holds on one section costs two calls, not
-- hundreds. Nothing else reads them while the script runs.
local section_cache = {}

local function section(code)
  local cached = section_cache[code]
  if cached == nil then
    local f = redis.call('HMGET', K_SECTIONS, code .. ':kind', code .. ':cap',
                         code .. ':held', code .. ':sold')
    cached = f[1] and {kind = f[1], cap = tonumber(f[2]), held = tonumber(f[3]),
                       sold = tonumber(f[4])} or false
    section_cache[code] = cached
  end
  return cached or nil
end

local function counter(code, field)
  return section(code)[field]
end

local function bump(code, field, n)
  local s = section(code)
  s[field] = s[field] + n
  section_changed(code)
end

local meta_cache = {}

local function meta_field(field)
  if meta_cache[field] == nil then
    meta_cache[field] = redis.call('HGET', K_META, field) or false
  end
  return meta_cache[field] or nil
end

-- 0: no per-customer limit, and no per-customer hold list to keep.
local function customer_limit()
  return tonumber(meta_field('max_per_customer') or '0')
end

-- Places one customer may hold at once (0: no cap), beside the limit on
-- held and sold together: what an event with no limit still protects.
local function held_limit()
  return tonumber(meta_field('max_held') or '0')
end

-- Whether the engine keeps each customer's list of live holds (settled
-- before a limit is checked).
local function tracks_customers()
  return customer_limit() > 0 or held_limit() > 0
end

-- Bumps the version once and publishes everything this script changed.
local function finish()
  if #changed_seat_order == 0 and #changed_section_order == 0 then
    return tonumber(redis.call('HGET', K_META, 'version') or '0')
  end
  for _, code in ipairs(changed_section_order) do
    local s = section_cache[code]
    redis.call('HSET', K_SECTIONS, code .. ':held', s.held, code .. ':sold', s.sold)
  end
  local version = redis.call('HINCRBY', K_META, 'version', 1)
  local changes = {}
  for _, seat in ipairs(changed_seat_order) do
    table.insert(changes, {seat = seat, status = changed_seats[seat]})
  end
  for _, code in ipairs(changed_section_order) do
    local cap, held, sold = counter(code, 'cap'), counter(code, 'held'), counter(code, 'sold')
    table.insert(changes, {section = code, available = cap - held - sold, held = held, sold = sold})
  end
  redis.call('PUBLISH', CHANNEL, cjson.encode({version = version, changes = changes}))
  return version
end

-- ---------------------------------------------------------------- holds

-- Refund markers share the holds hash: "refund:<order id>" is never a hold.
local REFUND_PREFIX = 'refund:'

local function is_refund_marker(field)
  return string.sub(field, 1, #REFUND_PREFIX) == REFUND_PREFIX
end

local function get_hold(hold_id)
  if is_refund_marker(hold_id) then return nil end
  local raw = redis.call('HGET', K_HOLDS, hold_id)
  if not raw then return nil end
  return cjson.decode(raw)
end

local function put_hold(hold_id, rec)
  redis.call('HSET', K_HOLDS, hold_id, cjson.encode(rec))
end

local function is_live(rec)
  return rec.st == 'held' and rec.e > NOW
end

local function customer_holds(customer)
  local raw = redis.call('HGET', K_CUSTOMERS, customer .. ':holds') or ''
  local ids = {}
  for id in string.gmatch(raw, '%S+') do table.insert(ids, id) end
  return ids
end

local function set_customer_holds(customer, ids)
  if #ids == 0 then
    redis.call('HDEL', K_CUSTOMERS, customer .. ':holds')
  else
    redis.call('HSET', K_CUSTOMERS, customer .. ':holds', table.concat(ids, ' '))
  end
end

local function drop_customer_hold(customer, hold_id)
  local kept = {}
  for _, id in ipairs(customer_holds(customer)) do
    if id ~= hold_id then table.insert(kept, id) end
  end
  set_customer_holds(customer, kept)
end

-- Ends a hold that is still marked held: its seats or tickets leave "held",
-- either back to sale (released/expired) or on to "sold" (confirmed).
local function end_hold(hold_id, rec, new_status, order_id)
  local sold = new_status == 'confirmed'
  if rec.seats then
    for _, seat in ipairs(rec.seats) do
      local code = section_of(seat)
      bump(code, 'held', -1)
      if sold then
        redis.call('HSET', K_SEATS, seat, 's:' .. order_id)
        bump(code, 'sold', 1)
        seat_changed(seat, 'sold')
      else
        redis.call('HSET', K_SEATS, seat, 'a')
        seat_changed(seat, 'available')
      end
    end
  else
    bump(rec.sec, 'held', -rec.q)
    if sold then bump(rec.sec, 'sold', rec.q) end
  end
  if redis.call('HINCRBY', K_CUSTOMERS, rec.c .. ':held', -rec.q) <= 0 then
    redis.call('HDEL', K_CUSTOMERS, rec.c .. ':held')  -- nothing held: no field left behind
  end
  if sold then redis.call('HINCRBY', K_CUSTOMERS, rec.c .. ':sold', rec.q) end
  if tracks_customers() then drop_customer_hold(rec.c, hold_id) end
  rec.st = new_status
  rec.o = order_id
  if sold then
    rec.ca = NOW
    if rec.ord then rec.ord.pay = 'succeeded' end
  end
  put_hold(hold_id, rec)
  redis.call('ZREM', K_EXPIRIES, 'h:' .. hold_id)
  redis.call('ZADD', K_EXPIRIES, NOW + RECORD_RETENTION_MS, 'g:' .. hold_id)
end

-- Makes up to `limit` expired holds visible as released and forgets old
-- records. Returns how many entries it handled and whether more are due.
local function reclaim_expired(limit)
  local due = redis.call('ZRANGEBYSCORE', K_EXPIRIES, '-inf', NOW, 'LIMIT', 0, limit)
  for _, member in ipairs(due) do
    local kind, hold_id = string.sub(member, 1, 1), string.sub(member, 3)
    if kind == 'h' then
      local rec = get_hold(hold_id)
      if rec and rec.st == 'held' then
        end_hold(hold_id, rec, 'expired')
      else
        redis.call('ZREM', K_EXPIRIES, member)
      end
    else
      if not is_refund_marker(hold_id) then  -- refund markers are kept for good
        redis.call('HDEL', K_HOLDS, hold_id)
      end
      redis.call('ZREM', K_EXPIRIES, member)
    end
  end
  return #due, #due == limit
end

-- ---------------------------------------------------------------- operations

local function fail(code, extra)
  local r = extra or {}
  r.ok = false
  r.code = code
  return r
end

local function hold_result(hold_id, rec, replayed)
  return {ok = true, hold_id = hold_id, customer_id = rec.c, seats = rec.seats,
          section = rec.sec, quantity = rec.q, expires_at_ms = rec.e,
          status = rec.st, replayed = replayed}
end

-- Validates the request shape; returns an error result or nil.
local function validate_hold(op)
  if type(op.hold_id) ~= 'string' or op.hold_id == '' or string.find(op.hold_id, '%s')
     or type(op.customer_id) ~= 'string' or op.customer_id == ''
     or string.find(op.customer_id, '[%s:]') or is_refund_marker(op.hold_id) then
    return fail('invalid_request', {detail = 'hold_id and customer_id must be non-empty tokens'})
  end
  if type(op.ttl_ms) ~= 'number' or op.ttl_ms < 1 then
    return fail('invalid_request', {detail = 'ttl_ms must be positive'})
  end
  if op.seats ~= nil then
    if type(op.seats) ~= 'table' or #op.seats == 0 or op.section ~= nil then
      return fail('invalid_request', {detail = 'seats must be a non-empty list, without section'})
    end
    if #op.seats > MAX_SEATS_PER_HOLD then
      return fail('invalid_request', {detail = 'too many seats in one hold'})
    end
    local seen, unknown, duplicate = {}, {}, {}
    for _, seat in ipairs(op.seats) do
      if type(seat) ~= 'string' then
        return fail('invalid_request', {detail = 'seat ids are strings'})
      end
      if seen[seat] then
        table.insert(duplicate, seat)
      elseif redis.call('HEXISTS', K_SEATS, seat) == 0 then
        table.insert(unknown, seat)
      end
      seen[seat] = true
    end
    if #duplicate > 0 then return fail('duplicate_seat', {seats = duplicate}) end
    if #unknown > 0 then return fail('unknown_seat', {seats = unknown}) end
    return nil
  end
  if type(op.section) ~= 'string' then
    return fail('invalid_request', {detail = 'give seats, or a section and a quantity'})
  end
  local target = section(op.section)
  if not target then return fail('unknown_section', {section = op.section}) end
  if target.kind ~= 'general' then return fail('wrong_section_kind', {section = op.section}) end
  if type(op.quantity) ~= 'number' or op.quantity < 1 or op.quantity ~= math.floor(op.quantity) then
    return fail('invalid_quantity', {section = op.section})
  end
  return nil
end

-- Frees this customer's own holds that expired, so the limit counts live ones.
local function settle_customer(customer)
  for _, id in ipairs(customer_holds(customer)) do
    local rec = get_hold(id)
    if not rec then
      drop_customer_hold(customer, id)
    elseif rec.st == 'held' and rec.e <= NOW then
      end_hold(id, rec, 'expired')
    end
  end
end

-- The seats of `seats` that are not free. A seat held by a hold whose time is
-- up counts as free: that hold is ended (expired) on the way.
local function unavailable_seats(seats)
  local unavailable = {}
  for _, seat in ipairs(seats) do
    local state = redis.call('HGET', K_SEATS, seat)
    if state and string.sub(state, 1, 2) == 'h:' then
      local holder_id = string.sub(state, 3)
      local holder = get_hold(holder_id)
      if holder and is_live(holder) then
        table.insert(unavailable, seat)
      elseif holder and holder.st == 'held' then
        end_hold(holder_id, holder, 'expired')
      else
        redis.call('HSET', K_SEATS, seat, 'a')
      end
    elseif state ~= 'a' then
      table.insert(unavailable, seat)
    end
  end
  return unavailable
end

-- The waiting room: while it is on, a hold needs its buyer's admission.
-- The API checked the pass's signature, account and event; this checks it
-- is the admission on record (one pass per admission) and still good. After
-- a rebuild of the waiting room (Redis lost it), a pass issued before it is
-- taken on its signature and its admission recorded again.
local function queue_refusal(op)
  if meta_field('queue') ~= '1' or op.qx == true then return nil end
  if type(op.qp) ~= 'string' or op.qp == '' then return fail('queue_pass_required') end
  local expires = tonumber(op.qe) or 0
  if expires <= NOW then return fail('queue_pass_invalid', {detail = 'the pass has expired'}) end
  local rec = redis.call('HGET', K_PASSES, op.customer_id)
  if rec then
    local nonce, until_ms = string.match(rec, '^([^:]+):(%d+)')
    if nonce ~= op.qp or tonumber(until_ms) <= NOW then
      return fail('queue_pass_invalid', {detail = 'not the admission on record'})
    end
    return nil
  end
  local since = tonumber(meta_field('queue_since') or '0')
  if (tonumber(op.qi) or NOW) < since then
    redis.call('HSET', K_PASSES, op.customer_id,
               op.qp .. ':' .. expires .. ':' .. (tonumber(op.qi) or 0))
    redis.call('ZADD', K_ACTIVE, expires, op.customer_id)
    return nil
  end
  return fail('queue_pass_invalid', {detail = 'no admission for this pass'})
end

local function place_hold(op)
  local status = meta_field('status')
  if not status then return fail('event_not_found') end
  local existing = type(op.hold_id) == 'string' and get_hold(op.hold_id)
  if existing then
    if existing.c ~= op.customer_id then return fail('hold_id_conflict') end
    if op.fp and existing.fp and op.fp ~= existing.fp then
      return fail('idempotency_key_reused')
    end
    if existing.st == 'refused' then
      local answer = existing.r
      answer.replayed = true
      return answer
    end
    if is_live(existing) or existing.st == 'confirmed' then
      return hold_result(op.hold_id, existing, true)
    end
    return fail('hold_expired', {hold_id = op.hold_id})
  end
  local invalid = validate_hold(op)
  if invalid then return invalid end
  if status ~= 'on_sale' then return fail('event_not_on_sale', {status = status}) end
  local refused = queue_refusal(op)
  if refused then return refused end

  local quantity = op.seats and #op.seats or op.quantity
  local limit, held_cap = customer_limit(), held_limit()
  local tracked = limit > 0 or held_cap > 0
  if tracked then
    settle_customer(op.customer_id)
    local held = tonumber(redis.call('HGET', K_CUSTOMERS, op.customer_id .. ':held') or '0')
    local sold = tonumber(redis.call('HGET', K_CUSTOMERS, op.customer_id .. ':sold') or '0')
    if limit > 0 and held + sold + quantity > limit then
      return fail('customer_limit', {limit = limit, held = held, sold = sold})
    end
    if held_cap > 0 and held + quantity > held_cap then
      return fail('customer_limit', {held_limit = held_cap, held = held, sold = sold})
    end
  end

  if op.seats then
    local unavailable = unavailable_seats(op.seats)
    if #unavailable > 0 then return fail('seats_unavailable', {unavailable = unavailable}) end
    for _, seat in ipairs(op.seats) do
      redis.call('HSET', K_SEATS, seat, 'h:' .. op.hold_id)
      bump(section_of(seat), 'held', 1)
      seat_changed(seat, 'held')
    end
  else
    local code = op.section
    local function available()
      return counter(code, 'cap') - counter(code, 'held') - counter(code, 'sold')
    end
    if available() < quantity then
      reclaim_expired(RECLAIM_PER_CALL * 4)
      if available() < quantity then
        return fail('sold_out', {section = code, available = math.max(available(), 0)})
      end
    end
    bump(code, 'held', quantity)
  end

  local rec = {c = op.customer_id, q = quantity, e = NOW + op.ttl_ms, st = 'held',
               seats = op.seats, sec = op.section, fp = op.fp}
  put_hold(op.hold_id, rec)
  redis.call('ZADD', K_EXPIRIES, rec.e, 'h:' .. op.hold_id)
  redis.call('HINCRBY', K_CUSTOMERS, op.customer_id .. ':held', quantity)
  if tracked then
    local ids = customer_holds(op.customer_id)
    table.insert(ids, op.hold_id)
    set_customer_holds(op.customer_id, ids)
  end
  if op.qp and meta_field('queue') == '1' then
    -- An admitted buyer who holds keeps their place in the sale while the hold lives.
    redis.call('ZADD', K_ACTIVE, 'GT', rec.e, op.customer_id)
  end
  return hold_result(op.hold_id, rec, false)
end

local function op_release(op)
  local rec = type(op.hold_id) == 'string' and get_hold(op.hold_id)
  if not rec or (op.customer_id and op.customer_id ~= '' and rec.c ~= op.customer_id) then
    return fail('hold_not_found', {hold_id = op.hold_id})
  end
  if rec.st == 'confirmed' then return fail('already_confirmed', {order_id = rec.o}) end
  if rec.st ~= 'held' then
    return {ok = true, hold_id = op.hold_id, released = false, status = rec.st}
  end
  local new_status = rec.e > NOW and 'released' or 'expired'
  end_hold(op.hold_id, rec, new_status)
  return {ok = true, hold_id = op.hold_id, released = new_status == 'released', status = new_status}
end

-- Refusals that depend on the moment: a retry with the same Idempotency-Key
-- (the same hold id and body fingerprint) gets the same answer, even once the
-- seats are free, for as long as a hold's record is kept.
local REMEMBERED = {seats_unavailable = true, sold_out = true, customer_limit = true,
                    event_not_on_sale = true}

local function op_hold(op)
  local result = place_hold(op)
  if not result.ok and not result.replayed and REMEMBERED[result.code]
     and type(op.fp) == 'string' and op.fp ~= '' then
    put_hold(op.hold_id, {c = op.customer_id, q = 0, e = NOW, st = 'refused', fp = op.fp,
                          r = result})
    redis.call('ZADD', K_EXPIRIES, NOW + RECORD_RETENTION_MS, 'g:' .. op.hold_id)
  end
  return result
end

-- Keeps a live hold for the payment window: a later expiry, never an earlier one.
local function op_extend(op)
  local rec = type(op.hold_id) == 'string' and get_hold(op.hold_id)
  if not rec or rec.c ~= op.customer_id then
    return fail('hold_not_found', {hold_id = op.hold_id})
  end
  if rec.st == 'confirmed' or rec.st == 'refunded' then
    return fail('already_confirmed', {order_id = rec.o})
  end
  if not is_live(rec) then return fail('hold_expired', {hold_id = op.hold_id}) end
  if type(op.until_ms) ~= 'number' then
    return fail('invalid_request', {detail = 'until_ms must be a time in ms'})
  end
  local until_ms = math.floor(op.until_ms)
  if until_ms > rec.e then
    rec.e = until_ms
    put_hold(op.hold_id, rec)
    redis.call('ZADD', K_EXPIRIES, rec.e, 'h:' .. op.hold_id)
  end
  return hold_result(op.hold_id, rec, false)
end

-- Checks a list of seat ids given by a caller (not taken from a hold record).
local function check_seat_list(seats)
  if type(seats) ~= 'table' or #seats == 0 then
    return fail('invalid_request', {detail = 'seats must be a non-empty list'})
  end
  if #seats > MAX_SEATS_PER_HOLD then
    return fail('invalid_request', {detail = 'too many seats in one order'})
  end
  local seen, duplicate = {}, {}
  for _, seat in ipairs(seats) do
    if type(seat) ~= 'string' then
      return fail('invalid_request', {detail = 'seat ids are strings'})
    end
    if seen[seat] then table.insert(duplicate, seat) end
    seen[seat] = true
  end
  if #duplicate > 0 then return fail('duplicate_seat', {seats = duplicate}) end
  return nil
end

-- What a late sale sells when the hold's record is gone: the caller's copy.
local function late_fallback(op)
  local customer = op.customer_id or ''
  if type(customer) ~= 'string' or string.find(customer, '[%s:]') then
    return fail('invalid_request', {detail = 'customer_id must be a token'})
  end
  if op.seats ~= nil then
    local invalid = check_seat_list(op.seats)
    if invalid then return invalid end
    local unknown = {}
    for _, seat in ipairs(op.seats) do
      if redis.call('HEXISTS', K_SEATS, seat) == 0 then table.insert(unknown, seat) end
    end
    if #unknown > 0 then return fail('unknown_seat', {seats = unknown}) end
    return nil, {c = customer, q = #op.seats, seats = op.seats}
  end
  if type(op.section) ~= 'string' then
    return fail('invalid_request',
                {detail = 'a late sale of a forgotten hold needs its seats, or section and quantity'})
  end
  local target = section(op.section)
  if not target then return fail('unknown_section', {section = op.section}) end
  if target.kind ~= 'general' then return fail('wrong_section_kind', {section = op.section}) end
  local q = op.quantity
  if type(q) ~= 'number' or q < 1 or q ~= math.floor(q) then
    return fail('invalid_quantity', {section = op.section})
  end
  return nil, {c = customer, q = q, sec = op.section}
end

-- A payment for a hold that lapsed: sells the same seats (or GA places) to the
-- order if they are free now. A seat held by an expired hold counts as free
-- (that hold is ended first, as in op_hold). `rec` is the hold's record (not
-- held any more), or a new one from late_fallback; it becomes confirmed.
local function sell_late(op, rec)
  -- The per-customer limit holds for a late sale as for a hold: a buyer who
  -- let holds lapse (or released them) cannot pay them all afterwards.
  local limit = customer_limit()
  if limit > 0 and rec.c ~= '' then
    settle_customer(rec.c)
    local held = tonumber(redis.call('HGET', K_CUSTOMERS, rec.c .. ':held') or '0')
    local sold = tonumber(redis.call('HGET', K_CUSTOMERS, rec.c .. ':sold') or '0')
    if held + sold + rec.q > limit then
      return fail('customer_limit', {limit = limit, held = held, sold = sold})
    end
  end
  if rec.seats then
    local unavailable = unavailable_seats(rec.seats)
    if #unavailable > 0 then return fail('seats_unavailable', {unavailable = unavailable}) end
    for _, seat in ipairs(rec.seats) do
      redis.call('HSET', K_SEATS, seat, 's:' .. op.order_id)
      bump(section_of(seat), 'sold', 1)
      seat_changed(seat, 'sold')
    end
  else
    local code = rec.sec
    local function available()
      return counter(code, 'cap') - counter(code, 'held') - counter(code, 'sold')
    end
    if available() < rec.q then
      reclaim_expired(RECLAIM_PER_CALL * 4)
      if available() < rec.q then
        return fail('sold_out', {section = code, available = math.max(available(), 0)})
      end
    end
    bump(code, 'sold', rec.q)
  end
  if rec.c ~= '' then
    redis.call('HINCRBY', K_CUSTOMERS, rec.c .. ':sold', rec.q)
  end
  rec.st, rec.o, rec.ca = 'confirmed', op.order_id, NOW
  if rec.ord then rec.ord.pay = 'succeeded' end
  if rec.e == nil then rec.e = NOW end
  put_hold(op.hold_id, rec)
  redis.call('ZREM', K_EXPIRIES, 'h:' .. op.hold_id)
  redis.call('ZADD', K_EXPIRIES, NOW + RECORD_RETENTION_MS, 'g:' .. op.hold_id)
  return nil
end

local function op_confirm(op)
  if type(op.order_id) ~= 'string' or op.order_id == '' then
    return fail('invalid_request', {detail = 'order_id is required'})
  end
  local rec = type(op.hold_id) == 'string' and get_hold(op.hold_id)
  if rec and (rec.st == 'confirmed' or rec.st == 'refunded') then
    if rec.o == op.order_id then
      return {ok = true, hold_id = op.hold_id, order_id = rec.o, replayed = true}
    end
    return fail('already_confirmed', {order_id = rec.o})
  end
  local late = false
  if op.late ~= true then
    if not rec then return fail('hold_expired', {hold_id = op.hold_id}) end
    if rec.st ~= 'held' then return fail('hold_expired', {hold_id = op.hold_id}) end
    if rec.e <= NOW then
      end_hold(op.hold_id, rec, 'expired')
      return fail('hold_expired', {hold_id = op.hold_id})
    end
    if meta_field('status') == 'cancelled' then
      return fail('event_not_on_sale', {status = 'cancelled'})
    end
    end_hold(op.hold_id, rec, 'confirmed', op.order_id)
  else
    local status = meta_field('status')
    if not status then return fail('event_not_found') end
    if type(op.hold_id) ~= 'string' or op.hold_id == '' or string.find(op.hold_id, '%s')
       or is_refund_marker(op.hold_id) then
      return fail('invalid_request', {detail = 'hold_id must be a non-empty token'})
    end
    if rec and rec.st == 'held' and rec.e <= NOW then end_hold(op.hold_id, rec, 'expired') end
    if status == 'cancelled' then return fail('event_not_on_sale', {status = status}) end
    if rec and rec.st == 'held' then
      end_hold(op.hold_id, rec, 'confirmed', op.order_id)  -- still live: a plain confirm
    else
      if not rec and redis.call('HEXISTS', K_HOLDS, REFUND_PREFIX .. op.order_id) == 1 then
        -- sold and refunded, and the hold's record forgotten since: never sold again
        return {ok = true, hold_id = op.hold_id, order_id = op.order_id, replayed = true}
      end
      if not rec then
        local invalid, made = late_fallback(op)
        if invalid then return invalid end
        rec = made
      end
      local refused = sell_late(op, rec)
      if refused then return refused end
      late = true
    end
  end
  local fields = {
    'type', 'order_confirmed',
    'event_id', meta_field('event_id'),
    'order_id', op.order_id,
    'hold_id', op.hold_id,
    'customer_id', rec.c,
    'seats', rec.seats and table.concat(rec.seats, ',') or '',
    'section', rec.sec or '',
    'quantity', rec.q,
    'confirmed_at_ms', NOW,
    'meta', cjson.encode(op.meta or {})}
  if late then
    table.insert(fields, 'late')
    table.insert(fields, '1')
  end
  local entry_id = redis.call('XADD', K_OUTBOX, '*', unpack(fields))
  return {ok = true, hold_id = op.hold_id, order_id = op.order_id, replayed = false,
          outbox_id = entry_id}
end

-- Returns a sale to the pool: the order's seats (those still sold to it) or
-- its GA places. Once per order: a "refund:<order id>" field in the holds hash,
-- never reclaimed, makes a second refund a replay.
local function op_refund(op)
  if type(op.order_id) ~= 'string' or op.order_id == '' or string.find(op.order_id, '%s') then
    return fail('invalid_request', {detail = 'order_id is required'})
  end
  local marker = REFUND_PREFIX .. op.order_id
  if redis.call('HEXISTS', K_HOLDS, marker) == 1 then
    return {ok = true, order_id = op.order_id, replayed = true}
  end
  local rec = type(op.hold_id) == 'string' and op.hold_id ~= '' and get_hold(op.hold_id)
  if rec and not (rec.st == 'confirmed' and rec.o == op.order_id) then rec = nil end
  local seats, code, quantity
  if rec then
    seats, code, quantity = rec.seats, rec.sec, rec.q
  elseif op.seats ~= nil then
    local invalid = check_seat_list(op.seats)
    if invalid then return invalid end
    seats = op.seats
  else
    code, quantity = op.section, op.quantity
    if type(code) ~= 'string' or type(quantity) ~= 'number' or quantity < 1
       or quantity ~= math.floor(quantity) then
      return fail('invalid_request', {detail = 'give the seats, or a section and a quantity'})
    end
  end
  local freed_seats, freed = {}, 0
  if seats then
    local sold_to = 's:' .. op.order_id
    for _, seat in ipairs(seats) do
      if redis.call('HGET', K_SEATS, seat) == sold_to then
        redis.call('HSET', K_SEATS, seat, 'a')
        bump(section_of(seat), 'sold', -1)
        seat_changed(seat, 'available')
        table.insert(freed_seats, seat)
      end
    end
    freed = #freed_seats
  else
    -- Only the hold's record ties GA places to an order; once it is forgotten
    -- the caller vouches for the sale (the API refunds orders Postgres has paid).
    if not rec and op.sold_confirmed ~= true then
      return fail('order_not_sold', {order_id = op.order_id})
    end
    local target = section(code)
    if target and target.kind == 'general' then
      freed = math.min(quantity, math.max(target.sold, 0))
      if freed > 0 then bump(code, 'sold', -freed) end
    end
  end
  if freed == 0 then return fail('order_not_sold', {order_id = op.order_id}) end
  if rec then
    if rec.c ~= '' then redis.call('HINCRBY', K_CUSTOMERS, rec.c .. ':sold', -freed) end
    rec.st, rec.ra = 'refunded', NOW
    put_hold(op.hold_id, rec)
  end
  redis.call('HSET', K_HOLDS, marker, NOW)
  redis.call('XADD', K_OUTBOX, '*',
    'type', 'order_refunded',
    'event_id', meta_field('event_id') or '',
    'order_id', op.order_id,
    'hold_id', type(op.hold_id) == 'string' and op.hold_id or '',
    'seats', table.concat(freed_seats, ','),
    'section', seats and '' or code,
    'quantity', freed,
    'refunded_at_ms', NOW)
  return {ok = true, order_id = op.order_id, replayed = false}
end

local function valid_token(value)
  return type(value) == 'string' and value ~= '' and not string.find(value, '%s')
end

-- Places the order of a live hold: one per hold, kept in the hold's record
-- (ord) until the record is forgotten, and appended to the outbox for Postgres.
local function op_order(op)
  local status = meta_field('status')
  if not status then return fail('event_not_found') end
  if not valid_token(op.order_id) or type(op.until_ms) ~= 'number'
     or type(op.amount_cents) ~= 'number' or type(op.items) ~= 'table' then
    return fail('invalid_request', {detail = 'order_id, until_ms, amount_cents and items'})
  end
  local rec = type(op.hold_id) == 'string' and get_hold(op.hold_id)
  if not rec or rec.c ~= op.customer_id then
    return fail('hold_not_found', {hold_id = op.hold_id})
  end
  if rec.ord then return fail('order_exists', {order_id = rec.ord.id}) end
  if rec.st == 'confirmed' or rec.st == 'refunded' then
    return fail('order_exists', {order_id = rec.o})
  end
  if not is_live(rec) then return fail('hold_expired', {hold_id = op.hold_id}) end
  if status == 'cancelled' then return fail('event_not_on_sale', {status = status}) end
  local until_ms = math.floor(op.until_ms)
  if until_ms > rec.e then
    rec.e = until_ms
    redis.call('ZADD', K_EXPIRIES, rec.e, 'h:' .. op.hold_id)
  end
  rec.ord = {id = op.order_id, amt = op.amount_cents, cur = op.currency or '',
             items = op.items, pi = op.payment_intent or '', prov = op.provider or '',
             at = NOW, pay = 'pending'}
  put_hold(op.hold_id, rec)
  redis.call('XADD', K_OUTBOX, '*',
    'type', 'order_placed',
    'event_id', meta_field('event_id'),
    'order_id', op.order_id,
    'hold_id', op.hold_id,
    'customer_id', rec.c,
    'amount_cents', op.amount_cents,
    'currency', op.currency or '',
    'items', cjson.encode(op.items),
    'payment_intent', op.payment_intent or '',
    'provider', op.provider or '',
    'created_at_ms', NOW,
    'expires_at_ms', rec.e)
  return {ok = true, order_id = op.order_id, hold_id = op.hold_id, created_at_ms = NOW,
          expires_at_ms = rec.e}
end

-- An order that will never be paid for its seats (its payment was cancelled,
-- or refunded because its seats were resold): the hold is let go.
local function op_end(op)
  if not valid_token(op.order_id) or (op.status ~= 'cancelled' and op.status ~= 'refunded') then
    return fail('invalid_request', {detail = 'order_id, and status cancelled or refunded'})
  end
  local rec = valid_token(op.hold_id) and get_hold(op.hold_id)
  if rec and rec.ord and rec.ord.id == op.order_id then
    if rec.ord.fin then return {ok = true, order_id = op.order_id, replayed = true} end
    if rec.st == 'confirmed' or rec.st == 'refunded' then
      return fail('already_confirmed', {order_id = rec.o})
    end
    if rec.st == 'held' then end_hold(op.hold_id, rec, is_live(rec) and 'released' or 'expired') end
    rec.ord.fin = {st = op.status, why = op.reason or '', at = NOW}
    if op.status == 'cancelled' then rec.ord.pay = 'canceled' end
    put_hold(op.hold_id, rec)
  end
  redis.call('XADD', K_OUTBOX, '*',
    'type', 'order_ended',
    'event_id', meta_field('event_id') or '',
    'order_id', op.order_id,
    'hold_id', op.hold_id or '',
    'customer_id', rec and rec.c or (op.customer_id or ''),
    'status', op.status,
    'reason', op.reason or '',
    'ended_at_ms', NOW,
    'stripe_event', op.stripe_event or '')
  return {ok = true, order_id = op.order_id, replayed = false}
end

local function op_payment(op)
  if not valid_token(op.order_id) or type(op.status) ~= 'string' then
    return fail('invalid_request', {detail = 'order_id and status'})
  end
  local rec = valid_token(op.hold_id) and get_hold(op.hold_id)
  if rec and rec.ord and rec.ord.id == op.order_id and rec.ord.pay == 'pending' then
    rec.ord.pay = op.status
    put_hold(op.hold_id, rec)
  end
  redis.call('XADD', K_OUTBOX, '*',
    'type', 'payment_updated',
    'event_id', meta_field('event_id') or '',
    'order_id', op.order_id,
    'status', op.status,
    'updated_at_ms', NOW)
  return {ok = true, order_id = op.order_id}
end

local OPERATIONS = {hold = op_hold, release = op_release, confirm = op_confirm,
                    extend = op_extend, refund = op_refund, order = op_order,
                    ['end'] = op_end, payment = op_payment}

-- Applies ops in order, each all-or-nothing, and publishes one change set.
-- `allowed` limits which operations this script accepts (nil: all).
local function run(ops, allowed)
  reclaim_expired(RECLAIM_PER_CALL)
  local results = {}
  for i, op in ipairs(ops) do
    local fn = OPERATIONS[op.op]
    if fn == nil or (allowed and op.op ~= allowed) then
      results[i] = fail('invalid_request', {detail = 'unknown operation'})
    else
      results[i] = fn(op)
    end
  end
  return cjson.encode({version = finish(), results = results})
end
