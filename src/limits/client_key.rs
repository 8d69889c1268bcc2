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

    /// The key as every bext node names it (the rate sketches index by it,
    /// and `[cluster]` sends it to the other nodes): the same on every node
    /// and build, unlike the sketches' per-process hasher, so a count from
    /// another node lands on the same client. Injective where clients pick
    /// keys (IPv4 addresses; IPv6 at the default /64, whose low half is
    /// zero): `fmix64` is a bijection, so no two such keys share a name.
    pub fn cluster_hash(self) -> u64 {
        let (hi, lo) = ((self.0 >> 64) as u64, self.0 as u64);
        fmix64(hi ^ fmix64(lo ^ 0x9e37_79b9_7f4a_7c15))
    }
}

/// MurmurHash3's 64-bit finalizer: a bijection that mixes every input bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
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

    #[test]
    fn the_cluster_name_is_stable_and_distinct() {
        let v4 = ClientKey::new("192.0.2.1".parse().unwrap(), 64);
        // Pinned: every node (and every build) must compute the same name.
        assert_eq!(v4.cluster_hash(), v4.cluster_hash());
        assert_eq!(
            v4.cluster_hash(),
            0xaf54_7d1b_a5b2_3157,
            "{:x}",
            v4.cluster_hash()
        );
        let names: std::collections::HashSet<u64> = (0..10_000u32)
            .map(|n| ClientKey::new(std::net::Ipv4Addr::from(n).into(), 64).cluster_hash())
            .collect();
        assert_eq!(names.len(), 10_000);
    }
}
