//! Who a request is "from" for the limiters: the real client IP (the TCP peer,
//! or, when the peer is a trusted proxy, the rightmost untrusted hop of
//! `X-Forwarded-For`), reduced to a [`ClientKey`]: IPv4 addresses as they are,
//! IPv6 addresses cut to their network prefix (/64 by default), since one
//! customer usually owns a whole /64. Allocation-free: runs on every request.

use std::net::IpAddr;

use ipnet::IpNet;
use pingora::http::RequestHeader;

use crate::proxy::forwarded::is_trusted;

/// The identity a limit is counted against. IPv4 is stored as its
/// IPv4-mapped IPv6 form, so both families share one key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClientKey(u128);

impl ClientKey {
    pub fn new(ip: IpAddr, ipv6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let prefix = u32::from(ipv6_prefix.clamp(1, 128));
                let mask = u128::MAX << (128 - prefix);
                ClientKey(bits & mask)
            }
        }
    }

    pub fn raw(self) -> u128 {
        self.0
    }
}

/// The client's address for limiting purposes. `peer` is the TCP/QUIC peer.
pub fn real_ip(req: &RequestHeader, peer: Option<IpAddr>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return Some(peer);
    }
    // Walk the X-Forwarded-For chain from the right: hops appended by trusted
    // proxies are skipped; the first untrusted hop is the client.
    let mut leftmost = None;
    for value in req.headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for hop in text.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
            match hop.parse::<IpAddr>() {
                Ok(ip) if is_trusted(ip, trusted) => leftmost = Some(ip),
                Ok(ip) => return Some(ip),
                // A hop we cannot read: everything left of it is unverifiable.
                Err(_) => return Some(leftmost.unwrap_or(peer)),
            }
        }
    }
    Some(leftmost.unwrap_or(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(xff: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in xff {
            r.append_header("x-forwarded-for", *v).unwrap();
        }
        r
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix() {
        let a = ClientKey::new("2001:db8:1:2:aaaa::1".parse().unwrap(), 64);
        let b = ClientKey::new("2001:db8:1:2:bbbb::9".parse().unwrap(), 64);
        let c = ClientKey::new("2001:db8:1:3::1".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let v4 = ClientKey::new("192.0.2.1".parse().unwrap(), 64);
        let mapped = ClientKey::new("::ffff:192.0.2.1".parse().unwrap(), 64);
        assert_eq!(v4, mapped);
        assert_ne!(v4, ClientKey::new("192.0.2.2".parse().unwrap(), 64));
    }

    #[test]
    fn forwarded_for_is_only_believed_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let r = req(&["203.0.113.5, 10.0.0.7"]);
        let peer = Some("10.1.1.1".parse().unwrap());
        assert_eq!(
            real_ip(&r, peer, &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        let untrusted = Some("198.51.100.1".parse().unwrap());
        assert_eq!(real_ip(&r, untrusted, &trusted), untrusted);
        // A spoofed left part does not matter: the rightmost untrusted hop wins.
        let r = req(&["6.6.6.6", "203.0.113.5"]);
        assert_eq!(
            real_ip(&r, peer, &trusted),
            Some("203.0.113.5".parse().unwrap())
        );
        // Garbage or nothing: the peer.
        assert_eq!(real_ip(&req(&["nonsense"]), peer, &trusted), peer);
        assert_eq!(real_ip(&req(&[]), peer, &trusted), peer);
    }
}
