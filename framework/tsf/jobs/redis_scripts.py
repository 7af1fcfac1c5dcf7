"""The Lua scripts of the Redis job store: each state change is one script, so it is atomic.

Every script takes the key prefix as ``ARGV[1]`` (all keys share one hash tag).  Keys::

    P:job:<id>      hash: the job's record, ``owner`` (the runner that holds it) and ``entry``
                    (its stream entry)
    P:in:<id>       the stored request         P:out:<id>     the stored answer
    P:stream        the queue; consumer group ``runners``, one consumer per replica
    P:idem:<key>    Idempotency-Key -> job id  P:seq          submission counter
    P:index, P:model:<name>   sorted sets of job ids by submission order (the list's pages)
    P:expiry        sorted set of job ids by the time they expire (or are forgotten)
    P:callbacks     sorted set of finished jobs whose callback is not delivered yet
    P:counts        hash: jobs by status          P:bytes   bytes of inputs and results
    P:replicas      hash: replica -> "live workers:time", for the backlog per worker
"""

from __future__ import annotations

# end(job id, status, now, ttl, error json): the job leaves the queue for a final status; its
# input is dropped, and a job with a callback URL is listed for delivery (not when cancelled)
_END = """
local p = ARGV[1]
local function forget_entry(job, group)
  local entry = redis.call('HGET', job, 'entry')
  if entry and entry ~= '' then
    redis.call('XACK', p .. 'stream', group, entry)
    redis.call('XDEL', p .. 'stream', entry)
  end
end
local function finish(id, status, now, ttl, err, result_size)
  local job = p .. 'job:' .. id
  local old = redis.call('HGET', job, 'status')
  local input = tonumber(redis.call('HGET', job, 'input_size') or '0')
  redis.call('DEL', p .. 'in:' .. id)
  local expires = tonumber(now) + tonumber(ttl)
  redis.call('HSET', job, 'status', status, 'finished', now, 'expires', expires, 'owner', '',
             'error', err, 'input_size', 0, 'result_size', result_size)
  redis.call('HINCRBY', p .. 'counts', old, -1)
  redis.call('HINCRBY', p .. 'counts', status, 1)
  redis.call('INCRBY', p .. 'bytes', result_size - input)
  redis.call('ZADD', p .. 'expiry', expires, id)
  if status ~= 'cancelled' and (redis.call('HGET', job, 'callback_url') or '') ~= '' then
    redis.call('HSET', job, 'callback_status', 'pending')
    redis.call('ZADD', p .. 'callbacks', now, id)
  end
end
local function held(id, me)
  local job = p .. 'job:' .. id
  local status = redis.call('HGET', job, 'status')
  return (status == 'queued' or status == 'running') and redis.call('HGET', job, 'owner') == me
end
-- the job goes back to the end of the queue, for any runner
local function requeue(id, group, attempts)
  local job = p .. 'job:' .. id
  forget_entry(job, group)
  if redis.call('HGET', job, 'status') == 'running' then
    redis.call('HINCRBY', p .. 'counts', 'running', -1)
    redis.call('HINCRBY', p .. 'counts', 'queued', 1)
  end
  local entry = redis.call('XADD', p .. 'stream', '*', 'id', id)
  redis.call('HSET', job, 'status', 'queued', 'owner', '', 'entry', entry, 'attempts', attempts,
             'started', '')
end
"""

# ARGV: prefix, id, idempotency key, digest, max bytes, size, created, expires, payload,
#       then field/value pairs of the record.  -> {1, id, seq} | {0, id} | {2, id} | {3}
ADD = _END + """
local id, key, digest = ARGV[2], ARGV[3], ARGV[4]
if key ~= '' then
  local existing = redis.call('GET', p .. 'idem:' .. key)
  if existing then
    if redis.call('HGET', p .. 'job:' .. existing, 'idem_digest') == digest then
      return {0, existing}
    end
    return {2, existing}
  end
end
local size = tonumber(ARGV[6])
if tonumber(redis.call('GET', p .. 'bytes') or '0') + size > tonumber(ARGV[5]) then
  return {3}
end
local seq = redis.call('INCR', p .. 'seq')
local job = p .. 'job:' .. id
local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', job, 'id', id, 'seq', seq, 'status', 'queued', 'attempts', 0,
           'created', ARGV[7], 'expires', ARGV[8], 'input_size', size, 'result_size', 0,
           'idem_key', key, 'idem_digest', digest, unpack(fields))
redis.call('SET', p .. 'in:' .. id, ARGV[9])
redis.call('HSET', job, 'entry', redis.call('XADD', p .. 'stream', '*', 'id', id))
redis.call('ZADD', p .. 'index', seq, id)
redis.call('ZADD', p .. 'model:' .. redis.call('HGET', job, 'model'), seq, id)
redis.call('ZADD', p .. 'expiry', ARGV[8], id)
redis.call('INCRBY', p .. 'bytes', size)
redis.call('HINCRBY', p .. 'counts', 'queued', 1)
if key ~= '' then redis.call('SET', p .. 'idem:' .. key, id) end
return {1, id, seq}
"""

# ARGV: prefix, group, me, visibility ms, count, now, max attempts, ttl, own (1: first claim
# of this runner: its entries from a previous life too), autoclaim cursor
# -> {cursor, id, id, ...}
CLAIM = _END + """
local group, me, count, now = ARGV[2], ARGV[3], tonumber(ARGV[5]), ARGV[6]
local most, ttl = tonumber(ARGV[7]), ARGV[8]
local stream = p .. 'stream'
local claimed = {}
local function take(entries)
  for _, e in ipairs(entries) do
    local entry, id = e[1], e[2][2]
    local job = p .. 'job:' .. id
    local status = redis.call('HGET', job, 'status')
    local attempts = tonumber(redis.call('HGET', job, 'attempts') or '0')
    if (status ~= 'queued' and status ~= 'running') or redis.call('HGET', job, 'entry') ~= entry then
      redis.call('XACK', stream, group, entry)
      redis.call('XDEL', stream, entry)
    elseif status == 'running' and attempts >= most then
      forget_entry(job, group)
      finish(id, 'failed', now, ttl, cjson.encode({code = 500, type = 'JobInterruptedException',
        message = 'the replica running this job stopped, ' .. attempts ..
                  ' time(s) (job_max_attempts=' .. most .. ')'}), 0)
    else
      if status == 'running' then  -- taken over: it waits for a worker again
        redis.call('HINCRBY', p .. 'counts', 'running', -1)
        redis.call('HINCRBY', p .. 'counts', 'queued', 1)
      end
      redis.call('HSET', job, 'status', 'queued', 'owner', me, 'started', '')
      claimed[#claimed + 1] = id
    end
  end
end
local function read(from, n)
  local got = redis.call('XREADGROUP', 'GROUP', group, me, 'COUNT', n, 'STREAMS', stream, from)
  if got and got[1] then take(got[1][2]) end
end
if ARGV[9] == '1' then read('0', count) end
local cursor = ARGV[10]
if #claimed < count then
  local stale = redis.call('XAUTOCLAIM', stream, group, me, ARGV[4], cursor, 'COUNT',
                           count - #claimed)
  cursor = stale[1]
  take(stale[2])
  for _, entry in ipairs(stale[3] or {}) do redis.call('XACK', stream, group, entry) end
end
if #claimed < count then read('>', count - #claimed) end
table.insert(claimed, 1, cursor)
return claimed
"""

# ARGV: prefix, me, now, id, id, ...: the runner sent these jobs to a worker
MARK = _END + """
for i = 4, #ARGV do
  local id = ARGV[i]
  local job = p .. 'job:' .. id
  if redis.call('HGET', job, 'status') == 'queued' and redis.call('HGET', job, 'owner') == ARGV[2] then
    redis.call('HSET', job, 'status', 'running', 'started', ARGV[3])
    redis.call('HINCRBY', job, 'attempts', 1)
    redis.call('HINCRBY', p .. 'counts', 'queued', -1)
    redis.call('HINCRBY', p .. 'counts', 'running', 1)
  end
end
return 1
"""

# ARGV: prefix, group, me, id, id, ...  -> the ids this runner no longer holds
HEARTBEAT = _END + """
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  if held(id, ARGV[3]) then
    local entry = redis.call('HGET', p .. 'job:' .. id, 'entry')
    redis.call('XCLAIM', p .. 'stream', ARGV[2], ARGV[3], 0, entry, 'JUSTID')
  else
    lost[#lost + 1] = id
  end
end
return lost
"""

# ARGV: prefix, group, me, id, status, now, ttl, error json, result size, result -> 1 | 0
FINISH = _END + """
local id = ARGV[4]
if not held(id, ARGV[3]) then return 0 end
local job = p .. 'job:' .. id
forget_entry(job, ARGV[2])
if ARGV[10] ~= '' then redis.call('SET', p .. 'out:' .. id, ARGV[10]) end
finish(id, ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]))
return 1
"""

# ARGV: prefix, group, me, id, now, ttl, max attempts, error json -> 'queued' | 'failed' | ''
RETRY = _END + """
local id = ARGV[4]
if not held(id, ARGV[3]) then return '' end
local job = p .. 'job:' .. id
local attempts = tonumber(redis.call('HGET', job, 'attempts'))
if attempts >= tonumber(ARGV[7]) then
  forget_entry(job, ARGV[2])
  finish(id, 'failed', ARGV[5], ARGV[6], ARGV[8], 0)
  return 'failed'
end
redis.call('HSET', job, 'error', ARGV[8])
requeue(id, ARGV[2], attempts)
return 'queued'
"""

# ARGV: prefix, group, me, id -> 1 | 0
RELEASE = _END + """
local id = ARGV[4]
if not held(id, ARGV[3]) then return 0 end
local job = p .. 'job:' .. id
local attempts = tonumber(redis.call('HGET', job, 'attempts'))
if redis.call('HGET', job, 'status') == 'running' then attempts = math.max(attempts - 1, 0) end
requeue(id, ARGV[2], attempts)
return 1
"""

# ARGV: prefix, group, id, now, ttl -> the status before ('' : no such job)
CANCEL = _END + """
local id = ARGV[3]
local job = p .. 'job:' .. id
local status = redis.call('HGET', job, 'status')
if not status then return '' end
if status == 'queued' or status == 'running' then
  forget_entry(job, ARGV[2])
  finish(id, 'cancelled', ARGV[4], ARGV[5], '', 0)
end
return status
"""

# ARGV: prefix, group, now, ttl, limit -> how many jobs it expired or forgot
SWEEP = _END + """
local now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  local job = p .. 'job:' .. id
  local status = redis.call('HGET', job, 'status')
  if not status or status == 'expired' then
    local key = redis.call('HGET', job, 'idem_key')
    if key and key ~= '' then redis.call('DEL', p .. 'idem:' .. key) end
    local model = redis.call('HGET', job, 'model')
    if model then redis.call('ZREM', p .. 'model:' .. model, id) end
    redis.call('ZREM', p .. 'index', id)
    redis.call('ZREM', p .. 'expiry', id)
    redis.call('DEL', job)
    if status then redis.call('HINCRBY', p .. 'counts', 'expired', -1) end
  elseif status == 'running' then
    redis.call('ZADD', p .. 'expiry', now + ttl, id)
  else
    local size = tonumber(redis.call('HGET', job, 'input_size') or '0') +
                 tonumber(redis.call('HGET', job, 'result_size') or '0')
    forget_entry(job, ARGV[2])
    redis.call('DEL', p .. 'in:' .. id, p .. 'out:' .. id)
    redis.call('INCRBY', p .. 'bytes', -size)
    redis.call('HINCRBY', p .. 'counts', status, -1)
    redis.call('HINCRBY', p .. 'counts', 'expired', 1)
    redis.call('HSET', job, 'status', 'expired', 'expires', now + ttl, 'input_size', 0,
               'result_size', 0, 'finished', redis.call('HGET', job, 'finished') or now)
    if redis.call('HGET', job, 'callback_status') == 'pending' then
      redis.call('HSET', job, 'callback_status', 'failed')
    end
    redis.call('ZREM', p .. 'callbacks', id)
    redis.call('ZADD', p .. 'expiry', now + ttl, id)
  end
end
return #due
"""
