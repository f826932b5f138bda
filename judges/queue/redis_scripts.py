"""The Lua scripts behind the Redis Streams judge queue's moves (judges/queue/redis_streams.py): each runs
atomically in Redis, so a job is never in neither place nor in two, and each acts only when its ``XACK`` acked
the entry (a job another consumer already finished is not put back). Kept apart from the queue's Python so
that the queue module stays about one concern: the calls and their bounds."""

from __future__ import annotations

from typing import Final

# KEYS: stream; ARGV: group, entry ids. Acked entries are deleted: the stream holds only work not done.
ACK: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return acked
"""
# KEYS: stream, delayed; ARGV: group, entry id, due (ms), member (the fields as JSON).
RETRY_LATER: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return acked
"""
# KEYS: stream, dead; ARGV: group, entry id, then field/value pairs of the dead letter.
DEAD_LETTER: Final = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 1 then
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
  redis.call('XDEL', KEYS[1], ARGV[2])
end
return acked
"""
# KEYS: the stream. ARGV: group, consumer, entry ids. The entries the consumer still holds get their idle time
# reset (XCLAIM ... JUSTID leaves the delivery count alone); those another consumer holds now are left to it.
TOUCH: Final = """
local command = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    command[#command + 1] = ARGV[i]
  end
end
if #command == 5 then
  return 0
end
command[#command + 1] = 'JUSTID'
redis.call(unpack(command))
return #command - 6
"""

# KEYS: delayed1, stream1, delayed2, stream2, ...; ARGV: now (ms), most per judge.
MOVE_DUE: Final = """
local moved = 0
for i = 1, #KEYS, 2 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
  for _, member in ipairs(due) do
    local fields = cjson.decode(member)
    local args = {}
    for name, value in pairs(fields) do
      args[#args + 1] = name
      args[#args + 1] = tostring(value)
    end
    redis.call('XADD', KEYS[i + 1], '*', unpack(args))
    redis.call('ZREM', KEYS[i], member)
    moved = moved + 1
  end
end
return moved
"""
