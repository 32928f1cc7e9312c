//! Client addresses: CIDR lists (`whitelist-source-range` and friends) and the real client
//! address behind trusted proxies.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderValue;
use ipnet::IpNet;

/// A list of networks, as `10.0.0.0/8,192.168.1.7,2001:db8::/32` (a bare address is one
/// host; host bits after the prefix are ignored, as ingress-nginx's Go parser does).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrSet(Vec<IpNet>);

// === impl CidrSet ===

impl CidrSet {
    /// Parses a comma- (or space-) separated list; an error names the first bad entry.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split([',', ' ', '\t', '\n']).filter(|e| !e.is_empty()) {
            let net = parse_entry(entry)
                .ok_or_else(|| format!("{entry:?} is not an IP address or CIDR"))?;
            nets.push(net);
        }
        if nets.is_empty() {
            return Err("no address or CIDR given".into());
        }
        nets.sort();
        nets.dedup();
        Ok(Self(nets))
    }

    /// Whether an address is in one of the networks (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for CidrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// One entry: `address/prefix` (host bits dropped) or a bare address. The address is read by
/// the standard library, which refuses IPv4 octets with leading zeros (`010.0.0.1`, octal to
/// some tools), as Go's parser and so ingress-nginx do; ipnet's own parser would take them in
/// the CIDR form only (found by fuzzing).
fn parse_entry(entry: &str) -> Option<IpNet> {
    let Some((addr, prefix)) = entry.split_once('/') else {
        return IpAddr::from_str(entry)
            .ok()
            .map(|ip| IpNet::from(canonical(ip)));
    };
    let addr = IpAddr::from_str(addr).ok()?;
    let digits = !prefix.is_empty() && prefix.bytes().all(|b| b.is_ascii_digit());
    if !digits || (prefix.len() > 1 && prefix.starts_with('0')) {
        return None;
    }
    let prefix = prefix.parse::<u8>().ok()?;
    IpNet::new(addr, prefix).ok().map(|net| net.trunc())
}

/// An IPv4-mapped IPv6 address as IPv4 (a dual-stack listener reports IPv4 peers that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address a request's policy is applied to. When the connection's peer is a
/// trusted proxy (`--trusted-proxies`), the `X-Forwarded-For` values (all of the header's
/// lines, in order) are walked from the right past every trusted proxy, and the first
/// untrusted address is the client (nginx's `real_ip_recursive on`); when every hop is
/// trusted the leftmost one is. An untrusted peer, or a missing header, gives the peer; an
/// entry that is not an address stops the walk at the last trusted hop. Trusting no one
/// (`trusted` empty) always gives the peer, so a client cannot choose its own address.
pub fn client_addr<'h>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'h HeaderValue>,
    trusted: &CidrSet,
) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let lines: Vec<&str> = forwarded_for
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut client = peer;
    for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(hop) = parse_hop(entry) else {
            return client;
        };
        client = hop;
        if !trusted.contains(hop) {
            return hop;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port (`1.2.3.4:80`,
/// `[::1]:80`), as some proxies write.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            inner.parse().ok().map(canonical)
        })
}
