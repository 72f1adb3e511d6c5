//! The Redis store: rate buckets and quota counters shared by every daemon that uses it.
//!
//! Each operation is one Lua script, so it is atomic on the server: two daemons cannot both take
//! the last call of a bucket or the last invocation of a quota. Rate buckets use the server's
//! `TIME`, so daemons with skewed clocks still agree. All keys carry one hash tag (`{prefix}`)
//! so a multi-key script is legal on Redis Cluster; the price is that admission keys live on one
//! cluster shard, which their small size and rate make acceptable.
//!
//! Connections are made lazily and dropped on error, so a Redis that comes back is used again
//! without a restart. Every call has a timeout: a hung Redis is a failure, not a hang.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{FromRedisValue, Script, ScriptInvocation};
use tokio::sync::Mutex;

use super::{Bucket, Charge, Error, QuotaRefusal, RateRefusal};
use crate::admission::quota::{Amounts, Exceeded, METRICS};

/// Where the Redis deployment is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One server: `redis://` or `rediss://` (TLS).
    Single(String),
    /// A Cluster, by some of its nodes' URLs.
    Cluster(Vec<String>),
    /// Sentinels, by their URLs, watching the master named `master`.
    Sentinel {
        /// Sentinel URLs.
        nodes: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
}

impl Target {
    /// Reads a URL: `redis://`, `rediss://`, or `redis+sentinel://h1:p1,h2:p2/MASTER`.
    pub fn from_url(url: &str) -> Result<Self, Error> {
        if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (hosts, master) = rest.split_once('/').ok_or_else(|| {
                Error::RedisConfig(format!(
                    "`{url}`: a sentinel URL is redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTER"
                ))
            })?;
            if master.is_empty() || hosts.is_empty() {
                return Err(Error::RedisConfig(format!(
                    "`{url}` lacks sentinel hosts or the master name"
                )));
            }
            return Ok(Self::Sentinel {
                nodes: hosts.split(',').map(|h| format!("redis://{h}")).collect(),
                master: master.to_owned(),
            });
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            Ok(Self::Single(url.to_owned()))
        } else {
            Err(Error::RedisConfig(format!(
                "`{url}` is not a redis://, rediss:// or redis+sentinel:// URL"
            )))
        }
    }
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

enum Connector {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
    Sentinel(Mutex<SentinelClient>),
}

/// A shared store on Redis.
pub struct Redis {
    connector: Connector,
    conn: Mutex<Option<Conn>>,
    prefix: String,
    timeout: Duration,
    take_rate: Script,
    reserve: Script,
    settle: Script,
}

fn redis_error(e: impl std::fmt::Display) -> Error {
    Error::Redis(e.to_string())
}

/// GCRA over several buckets, all or none (see `rate.rs` for the arithmetic).
/// KEYS: buckets. ARGV: interval_us, burst per bucket. Returns {0, 0} or {index, wait_us}.
const TAKE_RATE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local news = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if now < allow_at then return {i, allow_at - now} end
  news[i] = new_tat
end
for i, key in ipairs(KEYS) do
  local ttl_ms = math.ceil((news[i] - now) / 1000) + 1000
  redis.call('SET', key, string.format('%.0f', news[i]), 'PX', ttl_ms)
end
return {0, 0}
";

/// The same rule as `quota::reserve`, on several counters, all or none.
/// KEYS: counters (hashes m0..m3). ARGV per key: keep_seconds, 4 limits (-1 none), 4 wants.
/// Returns {0, taken...} or {index, metric, used, limit}.
const RESERVE: &str = r"
local taken = {0}
for i, key in ipairs(KEYS) do
  local base = (i - 1) * 9
  for m = 0, 3 do
    local limit = tonumber(ARGV[base + 2 + m])
    local want = tonumber(ARGV[base + 6 + m])
    local take = want
    if limit >= 0 then
      local used = tonumber(redis.call('HGET', key, 'm' .. m) or '0')
      if m == 0 then
        if used + want > limit then return {i, m, used, limit} end
      else
        if used >= limit then return {i, m, used, limit} end
        if limit - used < take then take = limit - used end
      end
    end
    taken[#taken + 1] = take
  end
end
for i, key in ipairs(KEYS) do
  for m = 0, 3 do
    local take = taken[1 + (i - 1) * 4 + m + 1]
    if take > 0 then redis.call('HINCRBY', key, 'm' .. m, take) end
  end
  local keep = tonumber(ARGV[(i - 1) * 9 + 1])
  if redis.call('TTL', key) < keep then redis.call('EXPIRE', key, keep) end
end
return taken
";

/// Adds signed deltas, never below zero, to counters that still exist.
/// KEYS: counters. ARGV: 4 deltas per key.
const SETTLE: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for m = 0, 3 do
      local d = tonumber(ARGV[(i - 1) * 4 + m + 1])
      if d ~= 0 then
        local v = redis.call('HINCRBY', key, 'm' .. m, d)
        if v < 0 then redis.call('HSET', key, 'm' .. m, 0) end
      end
    end
  end
end
return 0
";

impl Redis {
    /// A store on `target` with keys under `{prefix}` and `timeout` per operation. Nothing is
    /// connected yet: the first call connects.
    pub fn new(target: &Target, prefix: &str, timeout: Duration) -> Result<Self, Error> {
        let connector = match target {
            Target::Single(url) => {
                Connector::Single(redis::Client::open(url.as_str()).map_err(redis_error)?)
            }
            Target::Cluster(nodes) => Connector::Cluster(
                redis::cluster::ClusterClient::new(nodes.clone()).map_err(redis_error)?,
            ),
            Target::Sentinel { nodes, master } => Connector::Sentinel(Mutex::new(
                SentinelClient::build(
                    nodes.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )
                .map_err(redis_error)?,
            )),
        };
        Ok(Self {
            connector,
            conn: Mutex::new(None),
            prefix: format!("{{{prefix}}}"),
            timeout,
            take_rate: Script::new(TAKE_RATE),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
        })
    }

    /// The key of `name` in this store (under the hash tag).
    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let conn = match &self.connector {
            Connector::Single(client) => Conn::Single(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(redis_error)?,
            ),
            Connector::Cluster(client) => {
                Conn::Cluster(client.get_async_connection().await.map_err(redis_error)?)
            }
            Connector::Sentinel(client) => Conn::Single(
                client
                    .lock()
                    .await
                    .get_async_connection()
                    .await
                    .map_err(redis_error)?,
            ),
        };
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Runs a script invocation with the timeout; on any failure the connection is dropped so
    /// the next call reconnects (possibly to a new master or a restarted server).
    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, Error> {
        let attempt = async {
            let conn = self.connect().await?;
            match conn {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
            .map_err(redis_error)
        };
        let result = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Redis(format!("no answer within {:?}", self.timeout))),
        };
        if result.is_err() {
            *self.conn.lock().await = None;
        }
        result
    }

    /// Takes one call from every bucket, or from none.
    pub async fn take_rate(&self, buckets: &[Bucket]) -> Result<Result<(), RateRefusal>, Error> {
        let mut inv = self.take_rate.prepare_invoke();
        for b in buckets {
            inv.key(self.key(&b.key)).arg(b.interval_us).arg(b.burst);
        }
        let (index, wait): (usize, u64) = self.invoke(inv).await?;
        Ok(match index {
            0 => Ok(()),
            i => Err((i - 1, Duration::from_micros(wait))),
        })
    }

    /// What is left of a bucket, and how long until it is full (reads the server's clock).
    pub async fn peek_rate(&self, bucket: &Bucket) -> Result<(u64, Duration), Error> {
        const PEEK: &str = r"
local t = redis.call('TIME')
return {tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(redis.call('GET', KEYS[1]) or '0')}
";
        let script = Script::new(PEEK);
        let mut inv = script.prepare_invoke();
        inv.key(self.key(&bucket.key));
        let (now, tat): (u64, u64) = self.invoke(inv).await?;
        Ok(crate::admission::rate::remaining(
            tat,
            now,
            bucket.interval_us,
            bucket.burst,
        ))
    }

    /// Reserves against every counter, or none.
    pub async fn reserve(
        &self,
        charges: &[Charge],
    ) -> Result<Result<Vec<Amounts>, QuotaRefusal>, Error> {
        let mut inv = self.reserve.prepare_invoke();
        for c in charges {
            inv.key(self.key(&c.key)).arg(c.keep.as_secs().max(1));
            for limit in c.limits {
                inv.arg(limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
            }
            for want in c.want {
                inv.arg(want);
            }
        }
        let reply: Vec<u64> = self.invoke(inv).await?;
        match reply.first() {
            Some(0) => {
                let amounts = reply[1..]
                    .chunks(4)
                    .map(|c| [c[0], c[1], c[2], c[3]])
                    .collect::<Vec<Amounts>>();
                if amounts.len() != charges.len() {
                    return Err(Error::Redis(
                        "unexpected reply to the reserve script".into(),
                    ));
                }
                Ok(Ok(amounts))
            }
            Some(&i) if reply.len() == 4 => {
                let metric = METRICS
                    .get(usize::try_from(reply[1]).unwrap_or(usize::MAX))
                    .copied()
                    .ok_or_else(|| Error::Redis("unexpected metric in reply".into()))?;
                Ok(Err((
                    usize::try_from(i - 1).unwrap_or(0),
                    Exceeded {
                        metric,
                        used: reply[2],
                        limit: reply[3],
                    },
                )))
            }
            _ => Err(Error::Redis(
                "unexpected reply to the reserve script".into(),
            )),
        }
    }

    /// Adds signed deltas to counters.
    pub async fn settle(&self, deltas: &[(String, [i64; 4])]) -> Result<(), Error> {
        let mut inv = self.settle.prepare_invoke();
        for (key, delta) in deltas {
            inv.key(self.key(key));
            for d in delta {
                inv.arg(*d);
            }
        }
        let _: i64 = self.invoke(inv).await?;
        Ok(())
    }

    /// A counter's amounts.
    pub async fn read(&self, key: &str) -> Result<Amounts, Error> {
        const READ: &str = "return redis.call('HMGET', KEYS[1], 'm0', 'm1', 'm2', 'm3')";
        let script = Script::new(READ);
        let mut inv = script.prepare_invoke();
        inv.key(self.key(key));
        let values: Vec<Option<u64>> = self.invoke(inv).await?;
        let mut out = [0; 4];
        for (o, v) in out.iter_mut().zip(values) {
            *o = v.unwrap_or(0);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Target::from_url("rediss://h:6380/0").unwrap(),
            Target::Single("rediss://h:6380/0".into())
        );
        assert_eq!(
            Target::from_url("redis+sentinel://a:26379,b:26379/main").unwrap(),
            Target::Sentinel {
                nodes: vec!["redis://a:26379".into(), "redis://b:26379".into()],
                master: "main".into()
            }
        );
        assert!(Target::from_url("http://x").is_err());
        assert!(Target::from_url("redis+sentinel://a:1").is_err());
    }
}
