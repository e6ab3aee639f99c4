"""Redis state store: for several service replicas. Every update is one Lua script, hence atomic.

`redis://host:6379/0?prefix=guardrails:` (`prefix` is ours, stripped before connecting). Keys:
`<prefix>w:<key>` window buckets (hash bucket -> amount, expiring with the window), `<prefix>r:<key>` rate
(hash), `<prefix>b:<key>` breaker (hash) indexed in the set `<prefix>breakers`, `<prefix>s:<key>` streak,
`<prefix>m:<key>` model statistics (hash). The rate math mirrors `guardrails.state.base.fold` and the
statistics merge mirrors `Moments.merge`; the shared test suite holds both stores to them.

Calls are synchronous; the detectors and the streak observer make them through `StateStore.run`, on this
store's threads (`THREADS`), so a Redis that hangs holds those checks for the socket timeout (or their
detector's timeout, whichever ends first) while the worker's other requests and health probes go on. The
socket timeout is one second (redis-py's is five), `?socket_timeout=` and `?socket_connect_timeout=` in the
URL change it. The store pings at open, so a wrong URL is refused at start rather than failing each check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from guardrails.config import redacted_url
from guardrails.model_stats import ModelStats, Moments
from guardrails.state.base import (
    HALF_OPEN,
    MODEL_STATS_IDLE_S,
    OPEN,
    Breaker,
    RateAdd,
    RateStats,
    Snapshot,
    StateStore,
    WindowAdd,
)

DEFAULT_PREFIX = "guardrails:"
SOCKET_TIMEOUT_S = 1.0  # connect and each reply: a same-network Redis answers in well under a millisecond
# Calls in flight per process. A call takes a fraction of a millisecond, so a few threads carry thousands of
# checks a second; against a hung Redis the rest queue, and their detectors time out instead of waiting.
THREADS = 8

# KEYS: window keys..., [rate key], breaker keys..., streak keys...   ARGV[1]: JSON spec (see `step`).
STEP = """
local spec = cjson.decode(ARGV[1])
local now = spec.now
local k = 1
local totals = {}
for i, add in ipairs(spec.adds) do
  local key = KEYS[k]; k = k + 1
  local width = add.window / add.buckets
  local bucket = math.floor(now / width)
  if add.amount ~= 0 then
    redis.call('HINCRBYFLOAT', key, string.format('%d', bucket), add.amount)
    redis.call('PEXPIRE', key, math.ceil((add.window + width) * 1000))
  end
  local cutoff = bucket - add.buckets
  local fields = redis.call('HGETALL', key)
  local total = 0
  for j = 1, #fields, 2 do
    if tonumber(fields[j]) > cutoff then total = total + tonumber(fields[j + 1])
    else redis.call('HDEL', key, fields[j]) end
  end
  totals[i] = tostring(total)
end
local rate = false
if spec.rate then
  local r = spec.rate
  local key = KEYS[k]; k = k + 1
  local period = math.floor(now / r.period)
  local h = redis.call('HMGET', key, 'period', 'current', 'mean', 'var', 'samples')
  local last = tonumber(h[1]) or period
  local current, mean, var, samples = tonumber(h[2]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0,
    tonumber(h[5]) or 0
  if last ~= period then
    if current > 0 then
      if samples == 0 then mean, var, samples = current, 0, 1
      else
        local value = current
        if r.clamp_z > 0 and samples >= r.min_samples then
          local std = math.max(math.sqrt(math.max(var, 0)), 0.25 * math.abs(mean), 1.0)
          value = math.min(value, mean + r.clamp_z * std)
        end
        local diff = value - mean
        local inc = r.alpha * diff
        mean = mean + inc
        var = (1 - r.alpha) * (var + diff * inc)
        samples = samples + 1
      end
    end
    current = 0
  end
  current = current + r.amount
  redis.call('HSET', key, 'period', string.format('%d', period), 'current', tostring(current),
    'mean', tostring(mean), 'var', tostring(var), 'samples', tostring(samples))
  redis.call('PEXPIRE', key, spec.rate_ttl_ms)
  rate = {tostring(current), tostring(mean), tostring(var), samples}
end
local breakers = {}
for i = 1, spec.n_breakers do
  local key = KEYS[k]; k = k + 1
  local state = redis.call('HGET', key, 'state')
  if state == 'open' and tonumber(redis.call('HGET', key, 'until')) <= now then
    redis.call('HSET', key, 'state', 'half_open')
  end
  breakers[i] = redis.call('HGETALL', key)
end
local streaks = {}
for i = 1, spec.n_streaks do
  local key = KEYS[k]; k = k + 1
  streaks[i] = tonumber(redis.call('GET', key) or '0')
end
return cjson.encode({totals = totals, rate = rate, breakers = breakers, streaks = streaks})
"""

# KEYS: breaker, index set, streak. ARGV: key, reason, now, until, details JSON.
TRIP = """
local trips = redis.call('HINCRBY', KEYS[1], 'trips', 1)
redis.call('HSET', KEYS[1], 'key', ARGV[1], 'state', 'open', 'reason', ARGV[2], 'opened_at', ARGV[3],
  'until', ARGV[4], 'details', ARGV[5])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[3])
return trips
"""

# KEYS: breaker, index set. ARGV: key, required state ('' for any).
CLOSE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or (ARGV[2] ~= '' and state ~= ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: model statistics hash. ARGV: tokens n, mean, m2, segments n, mean, m2, idle TTL in ms.
# Floats travel as shortest round-trip strings both ways (`%.17g`): Lua's tostring keeps only 14 digits.
MERGE_MODEL_STATS = """
local out = {}
for i, part in ipairs({'t', 's'}) do
  local n, mean, m2 = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), tonumber(ARGV[3 * i])
  local h = redis.call('HMGET', KEYS[1], part .. 'n', part .. 'mean', part .. 'm2')
  local cn, cmean, cm2 = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if n > 0 then
    if cn == 0 then cn, cmean, cm2 = n, mean, m2
    else
      local count = cn + n
      local delta = mean - cmean
      cmean = cmean + delta * n / count
      cm2 = cm2 + m2 + delta * delta * cn * n / count
      cn = count
    end
  end
  local fields = {string.format('%d', cn), string.format('%.17g', cmean), string.format('%.17g', cm2)}
  redis.call('HSET', KEYS[1], part .. 'n', fields[1], part .. 'mean', fields[2], part .. 'm2', fields[3])
  for _, v in ipairs(fields) do out[#out + 1] = v end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return out
"""


def split_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    prefix = next((v for k, v in query if k == "prefix"), DEFAULT_PREFIX)
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisStateStore(StateStore):
    def __init__(self, url: str) -> None:
        self.url = url
        dsn, self.prefix = split_prefix(url)
        # The URL's own options win over these defaults (from_url applies them last).
        self._redis = redis.Redis.from_url(dsn, decode_responses=True, socket_timeout=SOCKET_TIMEOUT_S,
                                           socket_connect_timeout=SOCKET_TIMEOUT_S)
        try:
            self._redis.ping()
        except redis.RedisError as exc:  # at start: one line that names the store, not a driver traceback
            self._redis.close()
            raise ConnectionError(f"cannot reach the state store {redacted_url(url)}: {exc}") from exc
        self._step = self._redis.register_script(STEP)
        self._trip = self._redis.register_script(TRIP)
        self._close = self._redis.register_script(CLOSE)
        self._merge_model_stats = self._redis.register_script(MERGE_MODEL_STATS)
        self._index = self.prefix + "breakers"
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix="guardrails-state")

    def step(
        self,
        now: float,
        adds: Sequence[WindowAdd],
        rate: RateAdd | None = None,
        breaker_keys: Sequence[str] = (),
        streak_keys: Sequence[str] = (),
    ) -> Snapshot:
        keys = [self.prefix + "w:" + a.key for a in adds]
        spec: dict[str, Any] = {
            "now": now,
            "adds": [{"window": a.window_s, "buckets": a.buckets, "amount": a.amount} for a in adds],
            "n_breakers": len(breaker_keys),
            "n_streaks": len(streak_keys),
        }
        if rate is not None:
            keys.append(self.prefix + "r:" + rate.key)
            spec["rate"] = {
                "period": rate.period_s,
                "amount": rate.amount,
                "alpha": rate.alpha,
                "clamp_z": rate.clamp_z,
                "min_samples": rate.min_samples,
            }
            spec["rate_ttl_ms"] = int(rate.period_s * 1000 * 60 * 24)  # a day of periods without traffic
        keys += [self.prefix + "b:" + k for k in breaker_keys]
        keys += [self.prefix + "s:" + k for k in streak_keys]
        out = json.loads(self._step(keys=keys, args=[json.dumps(spec)]))
        stats = None
        if out["rate"]:
            current, mean, var, samples = out["rate"]
            var = float(var)
            stats = RateStats(float(current), float(mean), max(var, 0.0) ** 0.5, int(samples))
        breakers = {}
        for key, flat in zip(breaker_keys, _list(out["breakers"]), strict=True):
            found = _breaker(_list(flat))
            if found is not None:
                breakers[key] = found
        streaks = dict(zip(streak_keys, (int(s) for s in _list(out["streaks"])), strict=True))
        return Snapshot([float(t) for t in _list(out["totals"])], stats, breakers, streaks)

    def trip(
        self, key: str, reason: str, now: float, cooldown_s: float, details: dict[str, Any] | None = None
    ) -> Breaker:
        trips = self._trip(
            keys=[self.prefix + "b:" + key, self._index, self.prefix + "s:" + key],
            args=[key, reason, repr(now), repr(now + cooldown_s), json.dumps(details or {})],
        )
        return Breaker(key, OPEN, reason, now, now + cooldown_s, int(trips), details or {})

    def close_half_open(self, key: str) -> bool:
        return bool(self._close(keys=[self.prefix + "b:" + key, self._index], args=[key, HALF_OPEN]))

    def reset(self, key: str) -> bool:
        self._redis.delete(self.prefix + "s:" + key)
        return bool(self._close(keys=[self.prefix + "b:" + key, self._index], args=[key, ""]))

    def breaker(self, key: str) -> Breaker | None:
        return _breaker(self._redis.hgetall(self.prefix + "b:" + key))

    def breakers(self) -> list[Breaker]:
        keys = sorted(self._redis.smembers(self._index))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(self.prefix + "b:" + key)
        return [b for b in (_breaker(h) for h in pipe.execute()) if b is not None]

    def record_streaks(self, keys: Sequence[str], blocked: bool) -> None:
        if not keys:
            return
        pipe = self._redis.pipeline(transaction=True)
        for key in keys:
            if blocked:
                pipe.incr(self.prefix + "s:" + key)
            else:
                pipe.delete(self.prefix + "s:" + key)
        pipe.execute()

    def model_stats(self, key: str) -> ModelStats | None:
        fields = self._redis.hmget(self.prefix + "m:" + key, ["tn", "tmean", "tm2", "sn", "smean", "sm2"])
        return _model_stats(fields) if fields[0] is not None else None

    def merge_model_stats(self, key: str, batch: ModelStats) -> ModelStats:
        t, s = batch.tokens, batch.segments
        args = [t.count, repr(t.mean), repr(t.m2), s.count, repr(s.mean), repr(s.m2), int(MODEL_STATS_IDLE_S * 1000)]
        return _model_stats(self._merge_model_stats(keys=[self.prefix + "m:" + key], args=args))

    def purge(self) -> None:
        """Delete every key under this store's prefix (tests and teardown only)."""
        for key in self._redis.scan_iter(match=self.prefix + "*", count=500):
            self._redis.delete(key)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)  # a call stuck on a hung Redis ends at its timeout
        self._redis.close()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # cjson encodes an empty Lua table as {}


def _breaker(flat: Any) -> Breaker | None:
    fields = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else dict(flat or {})
    if "state" not in fields:
        return None
    return Breaker(
        fields["key"],
        fields["state"],
        fields["reason"],
        float(fields["opened_at"]),
        float(fields["until"]),
        int(fields.get("trips", 1)),
        json.loads(fields.get("details") or "{}"),
    )


def _model_stats(fields: Sequence[Any]) -> ModelStats:
    tn, tmean, tm2, sn, smean, sm2 = fields
    return ModelStats(Moments(int(tn), float(tmean), float(tm2)), Moments(int(sn), float(smean), float(sm2)))
