-- notify.lua: append an order's status change to its buyer's stream, once.
--
-- The notifier is at least once: a redelivered batch, or a stuck order the reconciler
-- re-published, brings the same OrderConfirmed / OrderRejected back. Appending each copy
-- would fill the capped stream with repeats, and push out the entries a reconnecting
-- client still has to read. A marker per (order, status), in the buyer's slot, makes the
-- append happen once; the marker and the append are one atomic step, so a crash cannot
-- leave a marker without its entry.
--
-- KEYS: [1] the buyer's stream ({user:<sub>}:events),
--       [2] the marker ({user:<sub>}:notified:<order_id>:<status>)
-- ARGV: [1] the entry's type, [2] its JSON data, [3] the stream's MAXLEN (approximate),
--       [4] the marker's TTL in seconds
-- Returns: the new entry's id, or false when this status was already appended.
-- luacheck: globals KEYS ARGV redis

if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', tonumber(ARGV[4])) then
  return false
end
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'type', ARGV[1], 'data', ARGV[2])
