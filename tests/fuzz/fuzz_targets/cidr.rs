//! CIDR lists (`whitelist-source-range`, `denylist-source-range`, `--trusted-proxies`) and the
//! client address behind trusted proxies.
//!
//! Every answer of `CidrSet::contains` is compared with a plain reference: each entry parsed
//! on its own with the standard library, containment computed with integer masks (an address
//! in IPv4-mapped IPv6 form is its IPv4 address; a bare address is one host). A parsed set
//! prints as a list that parses to the same set. `client_addr` gives the peer or one of the
//! `X-Forwarded-For` entries, and the peer whenever the peer is not trusted.
//!
//! Input: the list's text; after a NUL byte, addresses to look up (a byte whose low bit says
//! IPv4 or IPv6, then 4 or 16 bytes), and after a second NUL, an `X-Forwarded-For` value.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gatehouse::snapshot::policy::{CidrSet, client_addr};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

/// One network of the reference: the address as a number, its width (32 or 128) and prefix.
#[derive(Clone, Copy, Debug)]
struct Net {
    addr: u128,
    v4: bool,
    prefix: u8,
}

impl Net {
    fn contains(&self, ip: IpAddr) -> bool {
        let (value, v4) = number(canonical(ip));
        if v4 != self.v4 {
            return false;
        }
        let width = if v4 { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let mask = if host_bits >= 128 {
            0
        } else {
            !0u128 << host_bits
        };
        value & mask == self.addr & mask
    }

    /// The first and last address, and the ones just outside them.
    fn edges(&self) -> Vec<IpAddr> {
        let width = if self.v4 { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let span = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let first = if host_bits >= 128 {
            0
        } else {
            self.addr & (!0u128 << host_bits)
        };
        let last = first | span;
        let max = if self.v4 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        let mut out = vec![first, last];
        if first > 0 {
            out.push(first - 1);
        }
        if last < max {
            out.push(last + 1);
        }
        out.into_iter()
            .map(|n| {
                if self.v4 {
                    IpAddr::V4(Ipv4Addr::from(n as u32))
                } else {
                    IpAddr::V6(Ipv6Addr::from(n))
                }
            })
            .collect()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn number(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), true),
        IpAddr::V6(v6) => (u128::from(v6), false),
    }
}

/// An entry as the reference reads it: `address/prefix` (decimal, at most the address width) or a bare address (one host, IPv4-mapped IPv6 as IPv4).
fn reference_entry(entry: &str) -> Option<Net> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => {
            let addr: IpAddr = addr.parse().ok()?;
            // Digits only, without leading zeros (as ipnet and Go's netip read a prefix).
            let digits = prefix.bytes().all(|b| b.is_ascii_digit());
            if prefix.is_empty() || !digits || (prefix.len() > 1 && prefix.starts_with('0')) {
                return None;
            }
            (addr, Some(prefix.parse::<u8>().ok()?))
        }
        None => (canonical(entry.parse().ok()?), None),
    };
    let (value, v4) = number(addr);
    let width = if v4 { 32 } else { 128 };
    let prefix = prefix.unwrap_or(width);
    (prefix <= width).then_some(Net {
        addr: value,
        v4,
        prefix,
    })
}

fn probes(mut bytes: &[u8]) -> Vec<IpAddr> {
    let mut out = Vec::new();
    while let Some((&kind, rest)) = bytes.split_first() {
        if kind & 1 == 0 {
            let Some((a, rest)) = rest.split_first_chunk::<4>() else {
                break;
            };
            out.push(IpAddr::V4(Ipv4Addr::from(*a)));
            bytes = rest;
        } else {
            let Some((a, rest)) = rest.split_first_chunk::<16>() else {
                break;
            };
            out.push(IpAddr::V6(Ipv6Addr::from(*a)));
            bytes = rest;
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut sections = data.splitn(3, |&b| b == 0);
    let Ok(text) = std::str::from_utf8(sections.next().unwrap_or_default()) else {
        return;
    };
    let mut probes = probes(sections.next().unwrap_or_default());
    let forwarded = sections.next().unwrap_or_default();

    let parsed = CidrSet::parse(text);
    let entries: Vec<&str> = text
        .split([',', ' ', '\t', '\n'])
        .filter(|e| !e.is_empty())
        .collect();
    let reference: Vec<Option<Net>> = entries.iter().map(|e| reference_entry(e)).collect();
    let set = match parsed {
        Err(reason) => {
            assert!(!reason.is_empty());
            assert!(
                entries.is_empty() || reference.iter().any(Option::is_none),
                "{text:?} refused ({reason}) though every entry is an address or CIDR"
            );
            return;
        }
        Ok(set) => set,
    };
    let nets: Vec<Net> = reference
        .iter()
        .zip(&entries)
        .map(|(net, entry)| net.unwrap_or_else(|| panic!("{text:?}: {entry:?} accepted")))
        .collect();
    assert!(!set.is_empty() && set.len() <= nets.len());

    // Printed, it parses to the same set.
    let shown = set.to_string();
    assert_eq!(
        CidrSet::parse(&shown).as_ref(),
        Ok(&set),
        "{text:?} printed as {shown:?}"
    );

    for net in nets.iter().take(16) {
        probes.extend(net.edges());
    }
    let mapped: Vec<IpAddr> = probes
        .iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    probes.extend(mapped);
    for &ip in &probes {
        let expected = nets.iter().any(|n| n.contains(ip));
        assert_eq!(
            set.contains(ip),
            expected,
            "{text:?} contains {ip}? (nets {nets:?})"
        );
    }

    // The client behind trusted proxies.
    let Ok(header) = HeaderValue::from_bytes(forwarded) else {
        return;
    };
    let peer = probes
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let client = client_addr(peer, [&header], &set);
    // nginx's real_ip_recursive, walked with the reference's containment.
    let trusted = |ip: IpAddr| nets.iter().any(|n| n.contains(ip));
    let mut expected = canonical(peer);
    if trusted(expected) {
        let entries: Vec<&str> = header
            .to_str()
            .map_or(Vec::new(), |s| s.split(',').collect());
        for entry in entries
            .iter()
            .rev()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let hop = entry
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
                .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok());
            let Some(hop) = hop else { break };
            expected = canonical(hop);
            if !trusted(expected) {
                break;
            }
        }
    }
    assert_eq!(
        client, expected,
        "client of peer {peer} with {header:?} behind {text:?}"
    );
});
