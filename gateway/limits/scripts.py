"""The Lua scripts of the shared rate-limit engine (limits/redis_engine.py).

`SCRIPT` decides one request: GCRA over every limit (limits/gcra.py in Lua) and the key's
credits (limits/credits.py in Lua), with Redis's clock, writing only when everything passed.
`LOAD` puts a balance read from the store into Redis unless an instance did first.
`HEARTBEAT` announces an instance and counts the live ones.
"""

from __future__ import annotations

# limits/credits.py `period_of` in Lua: a UTC day or month number from Unix seconds (the month
# from the civil-from-days algorithm). Tests hold the two to the same answers.
PERIOD_LUA = """
local function period(kind, secs)
  if kind == 'daily' then return 'd' .. math.floor(secs / 86400) end
  if kind == 'monthly' then
    local z = math.floor(secs / 86400) + 719468
    local era = math.floor(z / 146097)
    local doe = z - era * 146097
    local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
      - math.floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
    local mp = math.floor((5 * doy + 2) / 153)
    local m = mp < 10 and mp + 3 or mp - 9
    local y = yoe + era * 400
    if m <= 2 then y = y + 1 end
    return 'm' .. (y * 12 + m - 1)
  end
  return ''
end
"""

SCRIPT = (
    PERIOD_LUA
    + """
local t = redis.call('TIME')
local secs = tonumber(t[1])
local now = secs * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local metered = ARGV[2] == '1'
local n = #KEYS
if metered then n = n - 1 end
local ok = 1
local tats = {}
local news = {}
for i = 1, n do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then
    tats[i] = stored
    local v = tonumber(stored)
    if v > now then tat = v end
  else
    tats[i] = '-1'
  end
  news[i] = tat + cost * interval
  if news[i] - now > tolerance then ok = 0 end
end
local balance = -1
local kind = ''
local cp = ''
if metered then
  local ck = KEYS[#KEYS]
  local h = redis.call('HMGET', ck, 'b', 'p', 'r', 'a', 'm')
  if not h[1] then return {'load'} end
  balance = tonumber(h[1])
  cp = h[2] or ''
  kind = h[3] or ''
  local current = period(kind, secs)
  if current ~= '' and current ~= cp then
    if h[5] == 'add' then balance = balance + tonumber(h[4]) else balance = tonumber(h[4]) end
    cp = current
    redis.call('HSET', ck, 'b', string.format('%.0f', balance), 'p', cp)
  end
  if balance < cost then ok = 0 end
end
if ok == 1 and cost > 0 then
  for i = 1, n do
    local ttl = math.floor((news[i] - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', ttl)
  end
  if metered then
    redis.call('HSET', KEYS[#KEYS], 'b', string.format('%.0f', balance - cost))
  end
end
return {string.format('%.0f', now), string.format('%.0f', balance), cp, kind, unpack(tats)}
"""
)

# A balance read from the store, put in Redis unless an instance put it there first.
LOAD = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'b', ARGV[1], 'p', ARGV[2], 'r', ARGV[3], 'a', ARGV[4],
    'm', ARGV[5], 'v', ARGV[6])
end
return 1
"""

HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return redis.call('ZCARD', KEYS[1])
"""
