//! Request and response header editing for proxying, done in place.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

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
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static HOST: HeaderName = header::HOST;

/// Values of the request cookies named `name`, in the order sent (over all Cookie headers: an
/// HTTP/2 client may send one per cookie).
pub fn request_cookies<'h>(headers: &'h HeaderMap, name: &str) -> impl Iterator<Item = &'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Client-address headers of other conventions: a client could claim any address in them, and
/// Gatehouse does not vouch for them, so they never reach an upstream.
static UNVOUCHED: [HeaderName; 2] = [header::FORWARDED, HeaderName::from_static("true-client-ip")];

/// True when the request asks to switch protocols (WebSocket and friends, HTTP/1.1 only).
/// `Upgrade: h2c` is not one: it asks this hop to speak HTTP/2, which is not passed on.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .is_some_and(|u| !u.as_bytes().eq_ignore_ascii_case(b"h2c"))
        && has_connection_token(headers, "upgrade")
}

fn has_connection_token(headers: &HeaderMap, token: &str) -> bool {
    list_tokens(headers, &header::CONNECTION).any(|t| t.eq_ignore_ascii_case(token))
}

/// The elements of a comma-separated list header (`Connection`, `TE`), over all its lines,
/// trimmed. Lines that are not visible ASCII hold no tokens.
pub fn list_tokens<'h>(headers: &'h HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'h str> {
    headers.get_all(name).iter().flat_map(value_tokens)
}

/// The elements of one line of a comma-separated list header, trimmed.
pub fn value_tokens(value: &HeaderValue) -> impl DoubleEndedIterator<Item = &str> {
    value
        .to_str()
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether a header belongs to one connection only (the ones [`remove_hop_by_hop`] removes by
/// name, `Upgrade` included).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes hop-by-hop headers, including those the Connection header names. With `upgrade`,
/// keeps `Connection: upgrade` and `Upgrade` so the protocol switch reaches the other side.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // One pass over the names (compares, no hashing) finds which are there: most messages
    // carry none, or only `Connection: keep-alive`, and a removal costs a hash lookup each.
    const UPGRADE_BIT: u16 = 1 << 8; // after the 8 of HOP_BY_HOP
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present |= 1 << i;
        } else if name == header::UPGRADE {
            present |= UPGRADE_BIT;
        }
    }
    if present == 0 && !upgrade {
        return;
    }
    // HOP_BY_HOP[0] is Connection: the headers its tokens name go too. Looked up among the
    // names present rather than hashed, as they are nearly always ones removed anyway.
    if present & 1 != 0 {
        let named: Vec<HeaderName> = list_tokens(headers, &header::CONNECTION)
            .filter_map(|token| {
                headers
                    .keys()
                    .find(|name| name.as_str().eq_ignore_ascii_case(token))
            })
            .filter(|name| **name != header::UPGRADE && !HOP_BY_HOP.contains(name))
            .cloned()
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if present & UPGRADE_BIT != 0 {
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
    /// The peer is a proxy Gatehouse trusts: the X-Forwarded-For it sent is kept and extended.
    pub trusted_peer: bool,
}

/// Headers this hop sets on a request to an upstream (`None`: removes), replacing any of the
/// same name the client sent. Applied to the header map for hyper's clients; the HTTP/1.1
/// connector writes them after the client's own headers, skipping the replaced ones, as nginx
/// builds its upstream request: the map then neither grows nor hashes a name per header.
/// The names are statics: neither cloned in nor dropped per request.
#[derive(Debug, Default)]
pub struct Overrides(Vec<(&'static HeaderName, Option<HeaderValue>)>);

impl Overrides {
    /// Room for the forwarding headers, the request id and a route's own without regrowing.
    pub fn new() -> Self {
        Self(Vec::with_capacity(10))
    }

    /// Sets `name`, which is not set yet (the callers set distinct names: no lookup needed).
    pub fn set(&mut self, name: &'static HeaderName, value: HeaderValue) {
        debug_assert!(!self.replaces(name), "{name} set twice");
        self.0.push((name, Some(value)));
    }

    /// Removes the client's `name`, which is not set yet.
    pub fn remove(&mut self, name: &'static HeaderName) {
        debug_assert!(!self.replaces(name), "{name} set twice");
        self.0.push((name, None));
    }

    /// Whether a client's header of this name gives way.
    pub fn replaces(&self, name: &HeaderName) -> bool {
        self.0.iter().any(|(n, _)| *n == name)
    }

    /// The headers set, in the order they were first set.
    pub fn values(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.0.iter().filter_map(|(n, v)| Some((*n, v.as_ref()?)))
    }

    pub fn apply(self, headers: &mut HeaderMap) {
        for (name, value) in self.0 {
            match value {
                Some(value) => {
                    headers.insert(name.clone(), value);
                }
                None => remove_present(headers, name),
            }
        }
    }
}

/// The forwarding headers. Gatehouse is the edge: X-Forwarded-For is the client's address
/// (appended to what a trusted proxy sent, else replacing whatever the client wrote),
/// X-Real-IP is the client's address, the other X-Forwarded-* describe this hop, and
/// `Forwarded` / `True-Client-IP` from the client are removed.
pub fn forwarded(headers: &HeaderMap, fwd: Forwarded<'_>, out: &mut Overrides) {
    let prior = headers
        .get(&X_FORWARDED_FOR)
        .filter(|v| fwd.trusted_peer && !v.is_empty());
    let xff = match prior {
        Some(prior) => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + fwd.client_ip.len());
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(fwd.client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => None,
    };
    out.set(
        &X_FORWARDED_FOR,
        xff.unwrap_or_else(|| fwd.client_ip.clone()),
    );
    out.set(&X_REAL_IP, fwd.client_ip.clone());
    out.set(&X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    out.set(&X_FORWARDED_PORT, fwd.port.clone());
    match fwd.host {
        Some(host) => out.set(&X_FORWARDED_HOST, host.clone()),
        None => out.remove(&X_FORWARDED_HOST),
    }
    for name in &UNVOUCHED {
        out.remove(name);
    }
}

/// [`forwarded`], applied to `headers`.
pub fn set_forwarded(headers: &mut HeaderMap, fwd: Forwarded<'_>) {
    let mut out = Overrides::new();
    forwarded(headers, fwd, &mut out);
    out.apply(headers);
}

/// Removes a header clients rarely send: a pass over the names is cheaper than the hash
/// lookup a removal of an absent name costs.
fn remove_present(headers: &mut HeaderMap, name: &HeaderName) {
    if headers.keys().any(|n| n == name) {
        headers.remove(name);
    }
}

/// Keeps a client's X-Request-Id or makes a new one; returns the value used.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    let mut out = Overrides::default();
    let id = request_id(headers, &mut out);
    out.apply(headers);
    id
}

/// The client's X-Request-Id, or a new one set in `out`.
pub fn request_id(headers: &HeaderMap, out: &mut Overrides) -> HeaderValue {
    if let Some(id) = headers
        .get(&X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 200)
    {
        return id.clone();
    }
    let id = new_request_id();
    out.set(&X_REQUEST_ID, id.clone());
    id
}

/// A 32-hex-digit id: a random per-process prefix and a counter, unique without a syscall.
pub fn new_request_id() -> HeaderValue {
    static PREFIX: LazyLock<[u8; 16]> = LazyLock::new(|| hex(rand::random()));
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&*PREFIX);
    id[16..].copy_from_slice(&hex(n));
    // Owned by one reference-counted allocation: the clones (upstream header, log) share it.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `n` in 16 lower-case hex digits.
fn hex(n: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// Gives a response to an HTTP/2 client its `date` (the backend's, or now) marked never to be
/// indexed. h2's HPACK encoder would otherwise add each new second's date to the connection's
/// table and find the current one by comparing the value with every date it holds (up to ~60,
/// each a cache miss), for every response on a connection that lives a minute; what indexing
/// saves is a few bytes a response for at most a second. (haproxy keeps no HPACK table for
/// what it sends at all.)
pub fn date_never_indexed(headers: &mut HeaderMap) {
    match headers.entry(header::DATE) {
        header::Entry::Occupied(mut date) => date.get_mut().set_sensitive(true),
        header::Entry::Vacant(date) => {
            let mut now = HeaderValue::from_bytes(&http_date()).expect("an HTTP date is ASCII");
            now.set_sensitive(true);
            date.insert(now);
        }
    }
}

/// The current time as an HTTP date, formatted once a second per thread.
pub fn http_date() -> [u8; 29] {
    type Cached = std::cell::Cell<(u64, [u8; 29])>;
    thread_local! {
        static CACHED: Cached = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == secs {
            return date;
        }
        let mut date = [0; 29];
        date.copy_from_slice(httpdate::fmt_http_date(now).as_bytes());
        cached.set((secs, date));
        date
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `date` is an HTTP date within two seconds of the clock.
    fn assert_now(date: &str) {
        let at = httpdate::parse_http_date(date).expect("an HTTP date");
        let now = SystemTime::now();
        let off = now.duration_since(at).unwrap_or_else(|e| e.duration());
        assert!(
            off < std::time::Duration::from_secs(2),
            "{date} is {off:?} off the clock"
        );
    }

    #[test]
    fn the_date_added_is_the_current_time() {
        assert_now(std::str::from_utf8(&http_date()).expect("ASCII"));
    }

    #[test]
    fn an_http2_date_is_the_backends_or_now_and_never_indexed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::DATE,
            HeaderValue::from_static("Sun, 06 Dec 2026 13:00:00 GMT"),
        );
        date_never_indexed(&mut headers);
        assert_eq!(headers[header::DATE], "Sun, 06 Dec 2026 13:00:00 GMT");
        assert!(headers[header::DATE].is_sensitive());

        let mut headers = HeaderMap::new();
        date_never_indexed(&mut headers);
        assert_now(headers[header::DATE].to_str().unwrap());
        assert!(headers[header::DATE].is_sensitive());
        assert_eq!(headers.get_all(header::DATE).iter().count(), 1);
    }

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
    fn headers_named_by_connection_go_whatever_their_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, X-Secret ,CLOSE"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("close", HeaderValue::from_static("1"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        remove_hop_by_hop(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-length"]);
    }

    #[test]
    fn a_message_without_hop_by_hop_headers_is_left_as_it_is() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.append("x-many", HeaderValue::from_static("1"));
        h.append("x-many", HeaderValue::from_static("2"));
        let before = h.clone();
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
    }

    #[test]
    fn every_value_of_a_repeated_hop_by_hop_header_goes() {
        let mut h = HeaderMap::new();
        h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("gzip"));
        h.append(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.append(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
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

    fn forwarded(trusted_peer: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.9"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_REAL_IP, HeaderValue::from_static("203.0.113.9"));
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static("for=203.0.113.9"),
        );
        h.insert("true-client-ip", HeaderValue::from_static("203.0.113.9"));
        let port = HeaderValue::from_static("8080");
        let host = HeaderValue::from_static("app.test");
        let fwd = Forwarded {
            client_ip: &HeaderValue::from_static("10.1.2.3"),
            proto: "http",
            port: &port,
            host: Some(&host),
            trusted_peer,
        };
        set_forwarded(&mut h, fwd);
        h
    }

    #[test]
    fn client_written_address_headers_are_replaced_by_the_peer() {
        let h = forwarded(false);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.1.2.3");
        assert_eq!(h.get(&X_REAL_IP).unwrap(), "10.1.2.3");
        assert_eq!(h.get(&X_FORWARDED_PROTO).unwrap(), "http");
        assert_eq!(h.get(&X_FORWARDED_HOST).unwrap(), "app.test");
        assert_eq!(h.get(&X_FORWARDED_PORT).unwrap(), "8080");
        assert!(h.get(header::FORWARDED).is_none());
        assert!(h.get("true-client-ip").is_none());
    }

    #[test]
    fn a_client_written_forwarded_host_goes_when_the_request_has_no_host() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil.test"));
        let port = HeaderValue::from_static("80");
        let client_ip = HeaderValue::from_static("10.1.2.3");
        let fwd = Forwarded {
            client_ip: &client_ip,
            proto: "http",
            port: &port,
            host: None,
            trusted_peer: false,
        };
        set_forwarded(&mut h, fwd);
        assert!(h.get(&X_FORWARDED_HOST).is_none(), "{h:?}");
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.1.2.3");
    }

    #[test]
    fn forwarded_for_of_a_trusted_proxy_is_appended_to() {
        let h = forwarded(true);
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "203.0.113.9, 10.1.2.3");
    }

    #[test]
    fn h2c_upgrade_is_not_passed_on() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Upgrade, HTTP2-Settings"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert(
            "http2-settings",
            HeaderValue::from_static("AAMAAABkAAQAAP__"),
        );
        assert!(!is_upgrade(&h));
        remove_hop_by_hop(&mut h, false);
        assert!(h.is_empty(), "{h:?}");
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
        assert!(ida.as_bytes().iter().all(u8::is_ascii_hexdigit), "{ida:?}");
        // The process's prefix, then a counter.
        assert_eq!(ida.as_bytes()[..16], idb.as_bytes()[..16]);
        assert_eq!(hex(0x0123_4567_89ab_cdef), *b"0123456789abcdef");
        assert_eq!(hex(1), *b"0000000000000001");
    }
}
