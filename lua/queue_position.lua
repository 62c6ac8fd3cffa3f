-- queue_position.lua: a fan's place in the waiting room, and the queue's state.
--
-- KEYS: the queue key set (lib/queue.lua, prepended by core/queue.py)
-- ARGV: pid ('' for the queue's state only)
-- Returns:
--   {state, waiting, admitted, place...} where place is the fan's (lib/queue.lua Q.place)
--   or empty when not in the queue; {'absent'} when the queue was never created
--
-- luacheck: globals KEYS ARGV redis
-- luacheck: read globals Q

local pid = ARGV[1]
local m = redis.call('HMGET', Q.K.meta, 'state', 'admitted')
if not m[1] then return {'absent'} end
local out = {m[1], redis.call('ZCARD', Q.K.wait), tonumber(m[2])}
if pid ~= '' then
  local place = Q.place(pid)
  if place then
    for _, v in ipairs(place) do out[#out + 1] = v end
  end
end
return out
