-- queue.lua — an event's waiting room: its settings, joining, admission, reading.
--
-- Everyone who joins before the room opens gets a uniformly random place
-- (the caller draws it from a CSPRNG; a second join keeps the first place),
-- so arriving early or joining again buys nothing; after the open, first come
-- first served. The event's actor admits on its timer (action "admit") at the
-- organizer's rate, never more than max_active at once, and not at all while
-- the event is sold out. An admission is a pass: a nonce and an expiry kept
-- in q:passes, which the hold script (lib.lua) checks in the same call as
-- the hold.
--
-- KEYS (all tagged {ev:<id>}: the event's slot, so it works on a cluster):
--   1 meta       the inventory's hash: "queue" (1 while the room is on) is what
--                the hold script reads; "status" (on_sale or not)
--   2 sections   the inventory's counters (is anything left to sell?)
--   3 q          hash: on, opens_at, order (random | fifo), apm (admissions a
--                minute; 0: auto), max_active, pass_ttl_ms, reform_until, since;
--                state: seq (places given after the open), last (last tick,
--                ms), credit, rate (auto's current rate), admitted, expired, ck
--                and ck_at (checkout latency, ms, written by the API)
--   4 q:waiting  zset: customer -> place (random ones in [0, 1), then 1 + seq)
--   5 q:passes   hash: customer -> "<nonce>:<expires ms>:<issued ms>"
--   6 q:active   zset: customer -> when their place in the sale ends (ms)
-- ARGV[1] the action:
--   configure  ARGV[2] JSON {on, opens_at, order, apm, max_active, pass_ttl_ms,
--              rebuilt?, reform_ms?}: settings (from Postgres). rebuilt: the
--              room lost its state (Redis lost it); joins during reform_ms get
--              random places again, and passes issued before now stay good.
--   join       ARGV[2] customer, ARGV[3] a random number in [0, 1)
--   me         ARGV[2] customer
--   admit      ARGV[2] JSON {auto_start, auto_min, auto_max, target_ms, max_gap_ms,
--              max_per_tick}
--   checkout   ARGV[2] how long a checkout of this event took (ms), for "auto"
--   state      nothing more
--
-- join and me return {ok, status = waiting | admitted | expired | none, ahead?,
-- nonce?, expires_at_ms?, issued_at_ms?} plus what state returns; join fails
-- queue_off. admit returns {ok, admitted, expired} plus what state returns.
-- state returns {ok, state = pre_queue | open | sold_out | closed, waiting,
-- active, rate, opens_at, admitted_total, expired_total, now}.

local K_META, K_SECTIONS, K_Q, K_WAITING, K_PASSES, K_ACTIVE =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]

local NOW = (function()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end)()

local function settings()
  local flat = redis.call('HGETALL', K_Q)
  local q = {}
  for i = 1, #flat, 2 do q[flat[i]] = flat[i + 1] end
  return q
end

local function available()
  local codes = redis.call('HGET', K_SECTIONS, 'codes')
  if not codes then return 0 end
  local left = 0
  for code in string.gmatch(codes, '[^,]+') do
    local f = redis.call('HMGET', K_SECTIONS, code .. ':cap', code .. ':held', code .. ':sold')
    left = left + math.max(0, (tonumber(f[1]) or 0) - (tonumber(f[2]) or 0) - (tonumber(f[3]) or 0))
  end
  return left
end

local function rate_of(q)
  local apm = tonumber(q.apm) or 0
  if apm > 0 then return apm end
  return tonumber(q.rate) or tonumber(q.auto_start) or 0
end

local function state_of(q)
  if q.on ~= '1' or redis.call('HGET', K_META, 'status') ~= 'on_sale' then return 'closed' end
  if NOW < (tonumber(q.opens_at) or 0) then return 'pre_queue' end
  if available() <= 0 then return 'sold_out' end
  return 'open'
end

local function summary(q, r)
  r = r or {}
  r.ok = true
  r.state = r.state or state_of(q)
  r.waiting = redis.call('ZCARD', K_WAITING)
  r.active = redis.call('ZCOUNT', K_ACTIVE, NOW + 1, '+inf')
  r.rate = rate_of(q)
  r.opens_at = tonumber(q.opens_at) or 0
  r.admitted_total = tonumber(q.admitted) or 0
  r.expired_total = tonumber(q.expired) or 0
  r.now = NOW
  return r
end

-- customer's admission as {nonce, expires, issued}, or nil
local function pass_of(customer)
  local raw = redis.call('HGET', K_PASSES, customer)
  if not raw then return nil end
  local nonce, expires, issued = string.match(raw, '^([^:]+):(%d+):?(%d*)$')
  if not nonce then return nil end
  return {nonce = nonce, expires = tonumber(expires), issued = tonumber(issued) or 0}
end

local function view(q, customer)
  local r = {}
  local pass = pass_of(customer)
  local rank = redis.call('ZRANK', K_WAITING, customer)
  if rank then
    r.status, r.ahead = 'waiting', rank
  elseif pass and pass.expires > NOW then
    r.status, r.nonce = 'admitted', pass.nonce
    r.expires_at_ms, r.issued_at_ms = pass.expires, pass.issued
  elseif pass then
    r.status = 'expired'
  else
    r.status = 'none'
  end
  return summary(q, r)
end

local action = ARGV[1]

if action == 'configure' then
  local c = cjson.decode(ARGV[2])
  local on = c.on and '1' or '0'
  redis.call('HSET', K_Q, 'on', on, 'opens_at', c.opens_at, 'order', c.order,
             'apm', c.apm, 'max_active', c.max_active, 'pass_ttl_ms', c.pass_ttl_ms)
  if c.rebuilt then
    redis.call('HSET', K_Q, 'since', NOW, 'reform_until', NOW + (c.reform_ms or 0))
  end
  -- The hold script's switch, only on a loaded inventory (load_inventory.lua
  -- copies it from here when it loads one).
  if redis.call('HEXISTS', K_META, 'version') == 1 then
    redis.call('HSET', K_META, 'queue', on)
    if c.rebuilt then redis.call('HSET', K_META, 'queue_since', NOW) end
  end
  return cjson.encode(summary(settings()))
end

if action == 'checkout' then
  -- A checkout took ARGV[2] ms: "auto" admits by this (a moving average over
  -- the latest checkouts; stale after 30 s). Nothing is written without a room.
  local f = redis.call('HMGET', K_Q, 'on', 'ck', 'ck_at')
  if f[1] ~= '1' then return cjson.encode({ok = true}) end
  local ms, ck = tonumber(ARGV[2]) or 0, tonumber(f[2])
  if ck and NOW - (tonumber(f[3]) or 0) < 30000 then ck = ck * 0.8 + ms * 0.2 else ck = ms end
  redis.call('HSET', K_Q, 'ck', ck, 'ck_at', NOW)
  return cjson.encode({ok = true, ck = ck})
end

if action == 'state' then
  return cjson.encode(summary(settings()))
end

if action == 'me' then
  return cjson.encode(view(settings(), ARGV[2]))
end

if action == 'join' then
  local q = settings()
  if q.on ~= '1' then return cjson.encode({ok = false, code = 'queue_off'}) end
  local customer = ARGV[2]
  if redis.call('ZSCORE', K_WAITING, customer) == false then
    local pass = pass_of(customer)
    if not (pass and pass.expires > NOW) then
      -- First join, or back of the line after a pass that lapsed unused.
      local random_until = math.max(tonumber(q.opens_at) or 0, tonumber(q.reform_until) or 0)
      local place
      if q.order ~= 'fifo' and NOW < random_until then
        place = tonumber(ARGV[3])
        if not place or place < 0 or place >= 1 then
          return cjson.encode({ok = false, code = 'invalid_request', detail = 'random place in [0, 1)'})
        end
      else
        place = 1 + redis.call('HINCRBY', K_Q, 'seq', 1)
      end
      if pass then redis.call('HDEL', K_PASSES, customer) end
      redis.call('ZADD', K_WAITING, place, customer)
    end
  end
  return cjson.encode(view(q, customer))
end

if action == 'admit' then
  local q = settings()
  if q.on ~= '1' then  -- no waiting room: nothing to do, nothing written
    return cjson.encode({ok = true, state = 'closed', admitted = 0, expired = 0})
  end
  local p = cjson.decode(ARGV[2])
  -- Places of passes that lapsed (no hold, or the hold ended) go to the next in line.
  local lapsed = redis.call('ZREMRANGEBYSCORE', K_ACTIVE, '-inf', NOW)
  if lapsed > 0 then redis.call('HINCRBY', K_Q, 'expired', lapsed) end
  local state = state_of(q)
  local opens_at = tonumber(q.opens_at) or 0
  local last = math.max(tonumber(q.last) or opens_at, opens_at)
  if state ~= 'open' then
    -- Nothing is banked while closed, before the open or sold out.
    redis.call('HSET', K_Q, 'last', math.max(NOW, opens_at), 'credit', 0)
    return cjson.encode(summary(q, {state = state, admitted = 0, expired = lapsed}))
  end
  local dt = math.max(0, math.min(NOW - last, p.max_gap_ms))
  local apm = tonumber(q.apm) or 0
  local rate = apm
  if apm <= 0 then
    -- auto: halve every 5 s while checkouts are slower than the target,
    -- double every 10 s while they are fast (or none are being made).
    rate = tonumber(q.rate) or p.auto_start
    local ck, fresh = tonumber(q.ck), NOW - (tonumber(q.ck_at) or 0) < 30000
    if ck and fresh and ck > p.target_ms then
      rate = rate * 0.5 ^ (dt / 5000)
    elseif not (ck and fresh) or ck < p.target_ms / 2 then
      rate = rate * 2 ^ (dt / 10000)
    end
    rate = math.max(p.auto_min, math.min(p.auto_max, rate))
    q.rate = rate
  end
  local credit = (tonumber(q.credit) or 0) + rate * dt / 60000
  -- At most max_per_tick a call (each admission is a few Redis writes and
  -- the call blocks the shard); the rest of the credit waits for the next.
  local n = math.min(math.floor(credit), p.max_per_tick or math.huge)
  local active = redis.call('ZCARD', K_ACTIVE)
  local room = (tonumber(q.max_active) or 0) - active
  if apm <= 0 then room = math.min(room, available() - active) end
  if n > room then
    n = math.max(room, 0)
    credit = math.min(credit, n + 1)  -- what could not be used is not banked
  end
  credit = credit - n
  local admitted = tonumber(q.admitted) or 0
  local popped = n > 0 and redis.call('ZPOPMIN', K_WAITING, n) or {}
  local ttl = tonumber(q.pass_ttl_ms) or 600000
  for i = 1, #popped, 2 do
    admitted = admitted + 1
    local customer = popped[i]
    redis.call('HSET', K_PASSES, customer, admitted .. ':' .. (NOW + ttl) .. ':' .. NOW)
    redis.call('ZADD', K_ACTIVE, NOW + ttl, customer)
  end
  redis.call('HSET', K_Q, 'last', NOW, 'credit', credit, 'admitted', admitted, 'rate', rate)
  q.admitted = admitted
  return cjson.encode(summary(q, {state = state, admitted = #popped / 2, expired = lapsed}))
end

return cjson.encode({ok = false, code = 'invalid_request', detail = 'unknown action'})
