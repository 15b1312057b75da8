-- batch.lua — apply many holds, releases and confirmations in one call.
--
-- The event actor sends everything that arrived within its batching window
-- here, so a crowd of buyers costs one round trip, not one each.
--
-- KEYS: the seven event keys of lib.lua.
-- ARGV[1] change channel
-- ARGV[2] JSON array of operations, applied in order, each all-or-nothing:
--   {"op": "hold", ...as hold.lua}
--   {"op": "release", ...as release.lua}
--   {"op": "confirm", ...as confirm.lua}
--
-- Returns JSON {"version", "results": [r1, r2, ...]}, one result per operation
-- in the same order, with the codes of the single-operation scripts. All the
-- changes of the batch are published as one change set (one version).

return run(cjson.decode(ARGV[2]), nil)
