//! `limit-connections`: how many requests of one client address may be in progress on a
//! route at once (nginx's `limit_conn` counts connections with a request in progress, and each
//! HTTP/2 stream as one). Beyond, 503 as ingress-nginx answers (`limit-conn-status-code`),
//! counted as `rate_limited`. A request holds its [`Slot`] until its response body ends or the
//! client goes: the slot rides in the request's record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use http::Request;

use super::ConnInfo;
use super::error::{ErrorKind, ProxyError};
use crate::snapshot::policy::RoutePolicy;

/// Requests in progress, by route policy and client address. Only routes with a limit come
/// here; an entry lives while it counts a request.
#[derive(Default)]
pub struct InProgress {
    counts: Arc<Mutex<HashMap<(usize, IpAddr), Count>>>,
}

struct Count {
    n: u32,
    /// Held so the policy's address, the key, is never reused while counted.
    _policy: Arc<RoutePolicy>,
}

/// One request's place in its route's limit; given back when dropped.
pub struct Slot {
    counts: Arc<Mutex<HashMap<(usize, IpAddr), Count>>>,
    key: (usize, IpAddr),
}

impl std::fmt::Debug for InProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProgress").finish_non_exhaustive()
    }
}

// === impl InProgress ===

impl InProgress {
    /// A slot for a request of `client`, unless `limit` of its requests are in progress.
    pub fn acquire(
        &self,
        policy: &Arc<RoutePolicy>,
        limit: NonZeroU32,
        client: IpAddr,
    ) -> Option<Slot> {
        let key = (Arc::as_ptr(policy) as usize, client);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(key).or_insert_with(|| Count {
            n: 0,
            _policy: policy.clone(),
        });
        if count.n >= limit.get() {
            return None;
        }
        count.n += 1;
        Some(Slot {
            counts: self.counts.clone(),
            key,
        })
    }

    /// Requests of `client` in progress on the route of `policy`.
    pub fn count(&self, policy: &Arc<RoutePolicy>, client: IpAddr) -> u32 {
        let key = (Arc::as_ptr(policy) as usize, client);
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        counts.get(&key).map_or(0, |c| c.n)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            count.n = count.n.saturating_sub(1);
            if count.n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// The request's slot when its route limits connections (`None` without a limit, or for an
/// address of `limit-allowlist`); 503 when the client has the limit in progress already.
pub fn take<B>(
    state: &InProgress,
    policy: &Arc<RoutePolicy>,
    conn: &ConnInfo,
    req: &Request<B>,
) -> Result<Option<Slot>, ProxyError> {
    let Some(limit) = policy.limits.connections else {
        return Ok(None);
    };
    let client = conn.client_addr(req);
    if policy
        .limits
        .exempt
        .as_ref()
        .is_some_and(|e| e.contains(client))
    {
        return Ok(None);
    }
    match state.acquire(policy, limit, client) {
        Some(slot) => Ok(Some(slot)),
        None => Err(ErrorKind::TooManyRequests.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_client_and_come_back_when_dropped() {
        let state = InProgress::default();
        let policy = Arc::new(RoutePolicy::default());
        let limit = NonZeroU32::new(2).unwrap();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let first = state.acquire(&policy, limit, a).expect("first");
        let second = state.acquire(&policy, limit, a).expect("second");
        assert!(state.acquire(&policy, limit, a).is_none(), "third of a");
        let other = state.acquire(&policy, limit, b).expect("another address");
        drop(first);
        assert_eq!(state.count(&policy, a), 1);
        let again = state.acquire(&policy, limit, a).expect("a slot came back");
        drop((second, again, other));
        assert_eq!(state.count(&policy, a), 0);
        assert!(state.counts.lock().unwrap().is_empty(), "entries kept");
    }

    #[test]
    fn another_route_has_its_own_count() {
        let state = InProgress::default();
        let (one, two) = (
            Arc::new(RoutePolicy::default()),
            Arc::new(RoutePolicy::default()),
        );
        let limit = NonZeroU32::MIN;
        let a: IpAddr = [10, 0, 0, 1].into();
        let _held = state.acquire(&one, limit, a).expect("one");
        assert!(state.acquire(&one, limit, a).is_none());
        assert!(state.acquire(&two, limit, a).is_some());
    }
}
