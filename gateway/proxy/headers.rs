//! Request and response header editing for proxying, done in place.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// True when the request asks to switch protocols (WebSocket and friends, HTTP/1.1 only).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && has_connection_token(headers, "upgrade")
}

fn has_connection_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers, including those the Connection header names. With `upgrade`,
/// keeps `Connection: upgrade` and `Upgrade` so the protocol switch reaches the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none: one pass over the names (cheap compares) decides.
    if !upgrade && !headers.keys().any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|name| *name != header::UPGRADE)
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// What the proxy knows of the client side of a request.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded<'a> {
    /// The client's IP as a header value (made once per connection).
    pub client_ip: &'a HeaderValue,
    pub proto: &'static str,
    pub port: &'a HeaderValue,
    pub host: Option<&'a HeaderValue>,
}

/// Sets the X-Forwarded-* headers: the client address is appended to X-Forwarded-For, the
/// others describe this hop (Gatehouse is the edge, so whatever the client sent is replaced).
pub fn set_forwarded(headers: &mut HeaderMap, fwd: Forwarded<'_>) {
    let prior = headers.get(&X_FORWARDED_FOR).filter(|v| !v.is_empty());
    let xff = match prior {
        Some(prior) => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + fwd.client_ip.len());
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(fwd.client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => Some(fwd.client_ip.clone()),
    };
    if let Some(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    headers.insert(&X_FORWARDED_PORT, fwd.port.clone());
    match fwd.host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
}

/// Keeps a client's X-Request-Id or makes a new one; returns the value used.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(&X_REQUEST_ID, id.clone());
    id
}

/// A 32-hex-digit id: a random per-process prefix and a counter, unique without a syscall.
fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<u64> = LazyLock::new(rand::random);
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 32];
    for (i, byte) in PREFIX.to_be_bytes().into_iter().chain(n.to_be_bytes()).enumerate() {
        id[2 * i] = HEX[usize::from(byte >> 4)];
        id[2 * i + 1] = HEX[usize::from(byte & 0xf)];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_keeps_upgrade_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
    }

    #[test]
    fn forwarded_for_is_appended_and_others_replaced() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        let port = HeaderValue::from_static("8080");
        let host = HeaderValue::from_static("app.test");
        let fwd = Forwarded {
            client_ip: &HeaderValue::from_static("10.1.2.3"),
            proto: "http",
            port: &port,
            host: Some(&host),
        };
        set_forwarded(&mut h, fwd);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "203.0.113.9, 10.1.2.3");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get(&X_FORWARDED_HOST).unwrap(), "app.test");
        assert_eq!(h.get(&X_FORWARDED_PORT).unwrap(), "8080");
    }

    #[test]
    fn request_id_is_kept_or_generated_uniquely() {
        let mut h = HeaderMap::new();
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc"));
        assert_eq!(ensure_request_id(&mut h), "abc");
        let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
        let (ida, idb) = (ensure_request_id(&mut a), ensure_request_id(&mut b));
        assert_ne!(ida, idb);
        assert_eq!(ida.len(), 32);
    }
}
