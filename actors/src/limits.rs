//! Limits on who may open sockets how fast: per-address socket caps and
//! handshake rates, a bound on handshakes in flight, and the keyed token
//! bucket those (and the REST rate limit) are built on.
//!
//! An address is the TCP peer, or the client a trusted proxy names in
//! `X-Forwarded-For`: behind a Kubernetes Ingress every connection comes from
//! the proxy, and counting the proxy would cap the whole service at one
//! address's allowance. IPv6 clients are counted by /64, the block a single
//! subscriber gets (counting each address would let one host take a whole
//! block's worth of addresses).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A rate: `per_second` on average, `burst` at once; `per_second` 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

/// Shards of a keyed map, so that keys on different shards never wait for
/// each other.
const SHARDS: usize = 32;

/// Entries a shard may gain before its spent buckets are swept: a bucket
/// that has refilled is the same as none, so sweeping forgets nothing, and
/// memory follows the keys active within one burst's refill time.
const SWEEP_EVERY: usize = 256;

struct RateShard<K> {
    /// Per key: nanoseconds after the epoch at which the next event would be
    /// on schedule (GCRA's theoretical arrival time).
    arrivals: HashMap<K, u64>,
    /// Length after the last sweep.
    swept_len: usize,
}

/// A token bucket per key (GCRA: one number per key), e.g. per user or per
/// address.
pub struct KeyedRate<K> {
    epoch: Instant,
    /// Nanoseconds one event costs.
    interval: u64,
    /// How far ahead of now a key's arrival time may run: `burst` events.
    window: u64,
    shards: Box<[Mutex<RateShard<K>>]>,
}

impl<K: Hash + Eq + Copy> KeyedRate<K> {
    /// `None` for a rate of 0 (no limit).
    pub fn new(rate: Rate) -> Option<Self> {
        if rate.per_second == 0 {
            return None;
        }
        let interval = 1_000_000_000 / u64::from(rate.per_second);
        Some(Self {
            epoch: Instant::now(),
            interval,
            window: interval.saturating_mul(u64::from(rate.burst.max(1))),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(RateShard {
                        arrivals: HashMap::new(),
                        swept_len: 0,
                    })
                })
                .collect(),
        })
    }

    fn shard(&self, key: &K) -> &Mutex<RateShard<K>> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        // The remainder is below SHARDS, which the slice holds.
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    /// Takes one event for `key` at `now`; when over the rate, how long
    /// until the next event would be allowed.
    pub fn try_take(&self, key: K, now: Instant) -> Result<(), Duration> {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut shard = self.shard(&key).lock().unwrap_or_else(PoisonError::into_inner);
        let arrival = shard.arrivals.get(&key).copied().unwrap_or(0);
        let next = arrival.max(now).saturating_add(self.interval);
        if next - now > self.window {
            return Err(Duration::from_nanos(next - now - self.window));
        }
        shard.arrivals.insert(key, next);
        if shard.arrivals.len() >= shard.swept_len + SWEEP_EVERY {
            shard.arrivals.retain(|_, arrival| *arrival > now);
            shard.swept_len = shard.arrivals.len();
        }
        Ok(())
    }

    /// Keys with a bucket not yet refilled (or not yet swept).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .arrivals
                    .len()
            })
            .sum()
    }
}

/// An address or block of addresses: `10.0.0.0/8`, `fd00::/8`, `192.0.2.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(u128::from(net), u128::from(ip), self.prefix),
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    a & mask == b & mask
}

/// An IPv4 address mapped into IPv6 (`::ffff:10.0.0.1`, as a dual-stack
/// socket reports it) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address or CIDR block"))?;
        let network = canonical(network);
        let most = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => most,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= most)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {most}"))?,
        };
        Ok(Self { network, prefix })
    }
}

/// The settings of [`ConnectionLimits`]; 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub struct ConnectionLimitSettings {
    /// Sockets (WebSocket or long-polling sessions) one address may hold.
    pub max_per_address: u32,
    /// New sockets one address may open.
    pub handshake_rate: Rate,
    /// Handshakes between the request and the session's CONNECT decided,
    /// at once on this node; past it new ones wait (see `handshake_wait`).
    pub max_in_flight: u32,
    /// How long a handshake waits for room before it is refused.
    pub handshake_wait: Duration,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<Cidr>,
}

/// Why a new socket is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitRefusal {
    /// The address holds its share of sockets.
    TooManyFromAddress,
    /// The address opens sockets too fast; it may again after this long.
    HandshakeRate(Duration),
    /// Handshakes in flight stayed at their bound for the whole wait.
    Busy,
}

/// Per-address counts and rates and the in-flight bound, shared by the
/// listener and every session holding a slot.
pub struct ConnectionLimits {
    settings: ConnectionLimitSettings,
    per_address: Box<[Mutex<HashMap<IpAddr, u32>>]>,
    /// Sockets counted per address, across the shards.
    counted: AtomicU64,
    rate: Option<KeyedRate<IpAddr>>,
    in_flight: Option<Arc<Semaphore>>,
}

impl Default for ConnectionLimits {
    /// No limit at all (what a library user gets unless they ask).
    fn default() -> Self {
        Self::new(ConnectionLimitSettings::default())
    }
}

impl std::fmt::Debug for ConnectionLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionLimits")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ConnectionLimits {
    pub fn new(settings: ConnectionLimitSettings) -> Self {
        let in_flight =
            (settings.max_in_flight > 0).then(|| Arc::new(Semaphore::new(settings.max_in_flight as usize)));
        Self {
            rate: KeyedRate::new(settings.handshake_rate),
            in_flight,
            per_address: (0..SHARDS).map(|_| Mutex::default()).collect(),
            counted: AtomicU64::new(0),
            settings,
        }
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the nearest address in `X-Forwarded-For` that is not one
    /// (proxies append, so entries left of an untrusted one may be forged).
    pub(crate) fn client_address(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: IpAddr| self.settings.trusted_proxies.iter().any(|cidr| cidr.contains(ip));
        let peer = canonical(peer);
        if !trusted(peer) {
            return peer;
        }
        let Some(forwarded_for) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for entry in forwarded_for.rsplit(',') {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Garbage from beyond the proxies: the last good hop stands.
                break;
            };
            client = canonical(ip);
            if !trusted(client) {
                break;
            }
        }
        client
    }

    /// Admits a new socket from `address`, or says why not. The slot keeps
    /// the socket counted until it is dropped.
    pub(crate) fn admit(&self, address: IpAddr, now: Instant) -> Result<AddressSlot, LimitRefusal> {
        let key = counting_key(address);
        let max = self.settings.max_per_address;
        if max > 0 {
            let shard = self.address_shard(&key);
            let held = shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .copied();
            if held.unwrap_or(0) >= max {
                return Err(LimitRefusal::TooManyFromAddress);
            }
        }
        if let Some(rate) = &self.rate {
            rate.try_take(key, now).map_err(LimitRefusal::HandshakeRate)?;
        }
        if max == 0 {
            return Ok(AddressSlot(None));
        }
        let mut counts = self
            .address_shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let held = counts.entry(key).or_insert(0);
        // Checked again: another handshake from the address may have taken
        // the last slot since.
        if *held >= max {
            return Err(LimitRefusal::TooManyFromAddress);
        }
        *held += 1;
        self.counted.fetch_add(1, Ordering::Relaxed);
        Ok(AddressSlot(Some(key)))
    }

    fn address_shard(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        // The remainder is below SHARDS, which the slice holds.
        &self.per_address[(hash % SHARDS as u64) as usize]
    }

    fn release(&self, key: IpAddr) {
        let mut counts = self
            .address_shard(&key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = counts.get_mut(&key) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&key);
            }
            self.counted.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Room for one handshake in flight, waiting up to `handshake_wait`;
    /// `Ok(None)` when there is no bound.
    pub(crate) async fn handshake_permit(&self) -> Result<Option<OwnedSemaphorePermit>, LimitRefusal> {
        let Some(in_flight) = &self.in_flight else {
            return Ok(None);
        };
        match tokio::time::timeout(
            self.settings.handshake_wait,
            Arc::clone(in_flight).acquire_owned(),
        )
        .await
        {
            Ok(Ok(permit)) => Ok(Some(permit)),
            // Closed never happens (nothing closes it); timed out is busy.
            _ => Err(LimitRefusal::Busy),
        }
    }

    /// Handshakes in flight now (0 without a bound).
    pub fn handshakes_in_flight(&self) -> usize {
        self.in_flight.as_ref().map_or(0, |in_flight| {
            (self.settings.max_in_flight as usize).saturating_sub(in_flight.available_permits())
        })
    }
}

/// The key an address is counted under: itself, or its /64 for IPv6.
fn counting_key(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// One socket's place in its address's count; `None` when not counted.
pub(crate) struct AddressSlot(Option<IpAddr>);

impl AddressSlot {
    /// Bound to the limits it was counted in, released when dropped.
    pub(crate) fn held_in(self, limits: &Arc<ConnectionLimits>) -> Option<HeldSlot> {
        self.0.map(|key| HeldSlot {
            key,
            limits: Arc::clone(limits),
        })
    }
}

/// A counted socket; dropping it frees its address's slot.
pub(crate) struct HeldSlot {
    key: IpAddr,
    limits: Arc<ConnectionLimits>,
}

impl Drop for HeldSlot {
    fn drop(&mut self) {
        self.limits.release(self.key);
    }
}

/// What a session holds for the limits: its address's slot for its whole
/// life, and its handshake's room in flight until its CONNECT is decided.
#[derive(Default)]
pub(crate) struct Admitted {
    pub(crate) slot: Option<HeldSlot>,
    pub(crate) handshake: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn limits(settings: ConnectionLimitSettings) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits::new(settings))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_keyed_rate_allows_the_burst_then_the_rate_per_key() {
        let rate = KeyedRate::new(Rate {
            per_second: 10,
            burst: 5,
        })
        .unwrap();
        let start = Instant::now() + Duration::from_secs(10);
        let taken = (0..20).filter(|_| rate.try_take(1, start).is_ok()).count();
        assert_eq!(taken, 5);
        let wait = rate.try_take(1, start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert!(rate.try_take(2, start).is_ok(), "another key has its own bucket");
        assert!(
            rate.try_take(1, start + wait).is_ok(),
            "allowed again after the wait"
        );
        assert!(
            KeyedRate::<u8>::new(Rate {
                per_second: 0,
                burst: 5
            })
            .is_none()
        );
    }

    #[test]
    fn refilled_buckets_are_swept() {
        let rate = KeyedRate::new(Rate {
            per_second: 1000,
            burst: 1,
        })
        .unwrap();
        let start = Instant::now();
        for key in 0..10_000_u32 {
            rate.try_take(key, start).unwrap();
        }
        let later = start + Duration::from_secs(1);
        for key in 10_000..20_000_u32 {
            rate.try_take(key, later).unwrap();
        }
        // The first 10,000 refilled a second ago; every shard swept since.
        assert!(rate.keys() <= 10_000 + SHARDS * SWEEP_EVERY, "{}", rate.keys());
    }

    #[test]
    fn cidrs_parse_and_match() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(block.contains(ip("::ffff:10.1.0.9")));
        assert!(!block.contains(ip("10.2.0.1")));
        let one: Cidr = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let limits = limits(ConnectionLimitSettings {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
            ..Default::default()
        });
        let proxy = ip("10.0.0.5");
        let stranger = ip("198.51.100.9");
        let xff = Some("203.0.113.1, 10.0.0.7");
        assert_eq!(limits.client_address(proxy, xff), ip("203.0.113.1"));
        assert_eq!(
            limits.client_address(stranger, xff),
            stranger,
            "forged by a non-proxy"
        );
        assert_eq!(limits.client_address(proxy, None), proxy);
        // Forged entries left of the first untrusted hop are ignored.
        assert_eq!(
            limits.client_address(proxy, Some("1.1.1.1, 203.0.113.1")),
            ip("203.0.113.1")
        );
        assert_eq!(
            limits.client_address(proxy, Some("junk, 203.0.113.2")),
            ip("203.0.113.2")
        );
        let untrusting = self::limits(ConnectionLimitSettings::default());
        assert_eq!(untrusting.client_address(proxy, xff), proxy);
    }

    #[test]
    fn addresses_are_capped_and_freed_with_their_sockets() {
        let limits = limits(ConnectionLimitSettings {
            max_per_address: 2,
            ..Default::default()
        });
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let first = limits.admit(a, now).unwrap().held_in(&limits);
        let second = limits.admit(a, now).unwrap().held_in(&limits);
        assert_eq!(limits.admit(a, now).err(), Some(LimitRefusal::TooManyFromAddress));
        assert!(limits.admit(ip("192.0.2.2"), now).is_ok(), "another address");
        drop(first);
        let third = limits.admit(a, now).unwrap().held_in(&limits);
        assert!(third.is_some() && second.is_some());
        // One IPv6 host is one /64.
        let _x = limits.admit(ip("2001:db8::1"), now).unwrap().held_in(&limits);
        let _y = limits.admit(ip("2001:db8::2"), now).unwrap().held_in(&limits);
        assert!(limits.admit(ip("2001:db8::3"), now).is_err());
        drop((second, third));
        assert!(
            limits
                .per_address
                .iter()
                .all(|s| s.lock().unwrap().get(&a).is_none())
        );
    }

    #[test]
    fn handshake_rate_per_address_and_off_with_zero() {
        let limits = limits(ConnectionLimitSettings {
            handshake_rate: Rate {
                per_second: 1,
                burst: 3,
            },
            ..Default::default()
        });
        let now = Instant::now();
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(limits.admit(a, now).is_ok());
        }
        assert!(matches!(
            limits.admit(a, now),
            Err(LimitRefusal::HandshakeRate(_))
        ));
        let off = self::limits(ConnectionLimitSettings::default());
        assert!((0..10_000).all(|_| off.admit(a, now).is_ok()));
    }

    #[tokio::test]
    async fn handshakes_in_flight_wait_for_room_then_are_refused() {
        let limits = limits(ConnectionLimitSettings {
            max_in_flight: 2,
            handshake_wait: Duration::from_millis(300),
            ..Default::default()
        });
        let first = limits.handshake_permit().await.unwrap();
        let _second = limits.handshake_permit().await.unwrap();
        assert_eq!(limits.handshakes_in_flight(), 2);
        assert_eq!(limits.handshake_permit().await.err(), Some(LimitRefusal::Busy));
        let waiting = {
            let limits = Arc::clone(&limits);
            tokio::spawn(async move { limits.handshake_permit().await.map(|p| p.is_some()) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(first);
        assert_eq!(
            waiting.await.unwrap(),
            Ok(true),
            "a waiting handshake gets the room freed"
        );
    }
}
