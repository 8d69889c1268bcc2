//! Who a request is "from" for the limiters: the real client IP (worked out
//! once per request in `exchange::client`) reduced to a [`ClientKey`]: IPv4 addresses as they are,
//! IPv6 addresses cut to their network prefix (/64 by default), since one
//! customer usually owns a whole /64. Allocation-free: runs on every request.

use std::net::IpAddr;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
