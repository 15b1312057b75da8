-- sweep.lua — make expired holds visible as released, in a bounded batch.
--
-- Holds are already free to every script once their expiry passes; the sweep
-- frees the counters and publishes the change so viewers see it.
--
-- KEYS: the nine event keys of lib.lua.
-- ARGV[1] change channel
-- ARGV[2] the most entries to handle in this call (keeps the script short)
--
-- Returns JSON {"version", "handled", "more", "queue"}; more=true means call
-- again; queue=true while the event's waiting room is on (the actor then runs
-- an admission tick: events without one cost no call more).

local handled, more = reclaim_expired(tonumber(ARGV[2]))
return cjson.encode({version = finish(), handled = handled, more = more,
                     queue = meta_field('queue') == '1'})
