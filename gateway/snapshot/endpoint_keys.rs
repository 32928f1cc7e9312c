//! Names and hash seeds of a backend's endpoints, for the choices that must agree on every
//! replica and stay put when other endpoints come and go: cookie affinity (a cookie names its
//! endpoint by a hash, never by its address) and `upstream-hash-by` (rendezvous hashing: a key
//! goes to the endpoint that scores highest for it, so removing an endpoint moves only the keys
//! it had, and adding one takes only the keys it now wins).
//!
//! Built once per endpoint set, on first use by a route that needs it; never per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use md5::{Digest as _, Md5};

/// Per-endpoint cookie tokens and rendezvous seeds of one backend.
#[derive(Debug)]
pub struct EndpointKeys {
    /// Per endpoint: hex MD5 of the backend's salt and the endpoint's address.
    tokens: Box<[Box<str>]>,
    /// Per endpoint: the rendezvous seed (from the same digest).
    seeds: Box<[u64]>,
    by_token: HashMap<Box<str>, usize>,
    /// Names the backend in a cookie, so a canary's cookie is told from the main one's.
    tag: Box<str>,
}

// === impl EndpointKeys ===

impl EndpointKeys {
    /// Keys of `endpoints`; `salt` names the backend (its Service and port), so the same pod
    /// behind two Services gets two tokens.
    pub fn new(salt: &str, endpoints: &[SocketAddr]) -> Self {
        let mut tokens = Vec::with_capacity(endpoints.len());
        let mut seeds = Vec::with_capacity(endpoints.len());
        for addr in endpoints {
            let digest = Md5::new()
                .chain_update(salt.as_bytes())
                .chain_update(b"|")
                .chain_update(addr.to_string().as_bytes())
                .finalize();
            let bytes: [u8; 16] = digest.into();
            tokens.push(hex(&bytes).into_boxed_str());
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&bytes[..8]);
            seeds.push(u64::from_le_bytes(seed));
        }
        let by_token = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        let tag: [u8; 16] = Md5::digest(salt.as_bytes()).into();
        Self {
            tokens: tokens.into(),
            seeds: seeds.into(),
            by_token,
            tag: hex(&tag[..4]).into_boxed_str(),
        }
    }

    /// What a persistent affinity cookie carries for endpoint `i`.
    pub fn token(&self, i: usize) -> &str {
        &self.tokens[i]
    }

    /// The endpoint a token names, if it is still one of the backend's.
    pub fn find(&self, token: &str) -> Option<usize> {
        self.by_token.get(token).copied()
    }

    /// The backend's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The endpoint a key hash goes to: the one scoring highest for it.
    pub fn best(&self, key: u64) -> Option<usize> {
        (0..self.seeds.len()).max_by_key(|&i| self.score(key, i))
    }

    /// Every endpoint, best first for a key hash (the fallbacks of [`EndpointKeys::best`]).
    pub fn ranked(&self, key: u64) -> Vec<usize> {
        let mut scored: Vec<(u64, usize)> = (0..self.seeds.len())
            .map(|i| (self.score(key, i), i))
            .collect();
        scored.sort_unstable_by(|a, b| b.cmp(a));
        scored.into_iter().map(|(_, i)| i).collect()
    }

    fn score(&self, key: u64, i: usize) -> u64 {
        mix(key ^ self.seeds[i])
    }
}

/// A hash of a key that is the same on every replica and every run (FNV-1a, then mixed).
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u8) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
            .collect()
    }

    #[test]
    fn tokens_name_endpoints_without_their_address() {
        let keys = EndpointKeys::new("default/web:80", &addrs(3));
        for i in 0..3 {
            let token = keys.token(i);
            assert_eq!(token.len(), 32);
            assert!(!token.contains("10.0.0"), "{token}");
            assert_eq!(keys.find(token), Some(i));
        }
        assert_eq!(keys.find("nope"), None);
        let other = EndpointKeys::new("default/api:80", &addrs(3));
        assert_ne!(other.token(0), keys.token(0), "salted by the backend");
        assert_ne!(other.tag(), keys.tag());
    }

    #[test]
    fn removing_an_endpoint_moves_only_its_keys() {
        let all = addrs(5);
        let before = EndpointKeys::new("s", &all);
        let mut fewer = all.clone();
        let gone = fewer.remove(2);
        let after = EndpointKeys::new("s", &fewer);
        let mut moved = 0;
        let mut load = [0usize; 5];
        for k in 0..5000u32 {
            let key = key_hash(format!("/item/{k}").as_bytes());
            let was = all[before.best(key).unwrap()];
            let now = fewer[after.best(key).unwrap()];
            load[before.best(key).unwrap()] += 1;
            if was != gone {
                assert_eq!(was, now, "key {k} moved off a remaining endpoint");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
        for n in load {
            assert!((700..1300).contains(&n), "uneven spread: {load:?}");
        }
    }

    #[test]
    fn ranked_starts_with_the_best() {
        let keys = EndpointKeys::new("s", &addrs(4));
        let key = key_hash(b"abc");
        let order = keys.ranked(key);
        assert_eq!(order[0], keys.best(key).unwrap());
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, vec![0, 1, 2, 3]);
        assert_eq!(EndpointKeys::new("s", &[]).best(key), None);
    }
}
