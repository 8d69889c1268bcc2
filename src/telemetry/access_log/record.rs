//! The raw form of an [`AccessEntry`] that a request thread hands the
//! writer: fixed-width numbers, then the strings' lengths, then the strings'
//! bytes back to back (so the writer checks UTF-8 once per record, not once
//! per string).
//! Encoding is a handful of copies; the JSON escaping, number and time
//! formatting and query redaction happen on the writer thread when it
//! decodes, so the request path pays for none of them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use super::AccessEntry;

/// The length of an absent string.
const NONE: u32 = u32::MAX;
/// Strings per record (the order of `encode`'s `strs`).
const STRS: usize = 14;

const HAS_CLIENT_V4: u8 = 1;
const HAS_CLIENT_V6: u8 = 2;
const HAS_UPSTREAM_V4: u8 = 4;
const HAS_UPSTREAM_V6: u8 = 8;
const HAS_UPSTREAM_TIME: u8 = 16;
const HAS_TRACE: u8 = 32;

/// Appends `e` to `out`.
pub(super) fn encode(e: &AccessEntry<'_>, out: &mut Vec<u8>) {
    let strs: [Option<&str>; STRS] = [
        Some(e.request_id),
        Some(e.method),
        Some(e.host),
        Some(e.path),
        e.query,
        Some(e.protocol),
        e.route,
        e.upstream_node,
        e.cache,
        e.waf,
        e.waf_rules,
        e.limit,
        e.user_agent,
        e.referer,
    ];
    let text: usize = strs.iter().map(|s| s.map_or(0, str::len)).sum();
    // Fixed part (at most 1 + 12 + 2 + 28 + 16 + 18 + 8 + 16) plus prefixes.
    out.reserve(120 + 4 * STRS + text);
    let mut flags = 0u8;
    match e.client_ip {
        Some(IpAddr::V4(_)) => flags |= HAS_CLIENT_V4,
        Some(IpAddr::V6(_)) => flags |= HAS_CLIENT_V6,
        None => {}
    }
    match e.upstream_addr {
        Some(SocketAddr::V4(_)) => flags |= HAS_UPSTREAM_V4,
        Some(SocketAddr::V6(_)) => flags |= HAS_UPSTREAM_V6,
        None => {}
    }
    if e.upstream_time.is_some() {
        flags |= HAS_UPSTREAM_TIME;
    }
    if e.trace_id.is_some() {
        flags |= HAS_TRACE;
    }
    out.push(flags);
    let t = e.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(&t.as_secs().to_le_bytes());
    out.extend_from_slice(&t.subsec_nanos().to_le_bytes());
    out.extend_from_slice(&e.status.to_le_bytes());
    out.extend_from_slice(&e.bytes_sent.to_le_bytes());
    out.extend_from_slice(&e.bytes_received.to_le_bytes());
    out.extend_from_slice(&e.waf_score.to_le_bytes());
    out.extend_from_slice(&nanos(e.duration).to_le_bytes());
    match e.client_ip {
        Some(IpAddr::V4(a)) => out.extend_from_slice(&a.octets()),
        Some(IpAddr::V6(a)) => out.extend_from_slice(&a.octets()),
        None => {}
    }
    if let Some(a) = e.upstream_addr {
        match a.ip() {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
        out.extend_from_slice(&a.port().to_le_bytes());
    }
    if let Some(d) = e.upstream_time {
        out.extend_from_slice(&nanos(d).to_le_bytes());
    }
    if let Some(id) = &e.trace_id {
        out.extend_from_slice(id);
    }
    // The lengths go first, filled in as the strings are copied behind them.
    let lens_at = out.len();
    out.resize(lens_at + 4 * STRS, 0);
    for (i, s) in strs.into_iter().enumerate() {
        let n = match s {
            Some(s) => {
                // Request heads are far below 4 GiB; a longer string would
                // be cut at a character boundary rather than misframed.
                let mut n = s.len().min(NONE as usize - 1);
                while !s.is_char_boundary(n) {
                    n -= 1;
                }
                out.extend_from_slice(&s.as_bytes()[..n]);
                n as u32
            }
            None => NONE,
        };
        out[lens_at + 4 * i..lens_at + 4 * i + 4].copy_from_slice(&n.to_le_bytes());
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Reads one record from the front of `b`: the entry and the bytes it took.
/// `None` when `b` does not start with a whole record (which [`encode`]
/// never produces).
pub(super) fn decode(b: &[u8]) -> Option<(AccessEntry<'_>, usize)> {
    let mut r = Reader { b, at: 0 };
    let flags = r.u8()?;
    let secs = r.u64()?;
    let sub = r.u32()?;
    let status = r.u16()?;
    let bytes_sent = r.u64()?;
    let bytes_received = r.u64()?;
    let waf_score = r.u32()?;
    let duration = Duration::from_nanos(r.u64()?);
    let client_ip = if flags & HAS_CLIENT_V4 != 0 {
        Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))
    } else if flags & HAS_CLIENT_V6 != 0 {
        Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))
    } else {
        None
    };
    let upstream_addr = if flags & HAS_UPSTREAM_V4 != 0 {
        let ip = IpAddr::V4(Ipv4Addr::from(r.array::<4>()?));
        Some(SocketAddr::new(ip, r.u16()?))
    } else if flags & HAS_UPSTREAM_V6 != 0 {
        let ip = IpAddr::V6(Ipv6Addr::from(r.array::<16>()?));
        Some(SocketAddr::new(ip, r.u16()?))
    } else {
        None
    };
    let upstream_time = if flags & HAS_UPSTREAM_TIME != 0 {
        Some(Duration::from_nanos(r.u64()?))
    } else {
        None
    };
    let trace_id = if flags & HAS_TRACE != 0 {
        Some(r.array::<16>()?)
    } else {
        None
    };
    let mut lens = [0u32; STRS];
    let mut total = 0usize;
    for n in &mut lens {
        *n = r.u32()?;
        if *n != NONE {
            total = total.checked_add(*n as usize)?;
        }
    }
    // Each string was a whole `&str`, so their concatenation is UTF-8 and
    // every length falls on a character boundary (`get` checks it anyway).
    let text = std::str::from_utf8(r.take(total)?).ok()?;
    let mut at = 0usize;
    let mut strs = [None; STRS];
    for (slot, &n) in strs.iter_mut().zip(&lens) {
        if n != NONE {
            let end = at + n as usize;
            *slot = Some(text.get(at..end)?);
            at = end;
        }
    }
    let [request_id, method, host, path, query, protocol, route, upstream_node, cache, waf, waf_rules, limit, user_agent, referer] =
        strs;
    let request_id = request_id.unwrap_or("-");
    let method = method.unwrap_or("-");
    let host = host.unwrap_or("");
    let path = path.unwrap_or("");
    let protocol = protocol.unwrap_or("-");
    let entry = AccessEntry {
        time: UNIX_EPOCH + Duration::new(secs, sub.min(999_999_999)),
        request_id,
        client_ip,
        method,
        host,
        path,
        query,
        protocol,
        status,
        bytes_sent,
        bytes_received,
        waf_score,
        duration,
        route,
        upstream_node,
        upstream_addr,
        upstream_time,
        cache,
        waf,
        waf_rules,
        limit,
        trace_id,
        user_agent,
        referer,
    };
    Some((entry, r.at))
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> AccessEntry<'static> {
        AccessEntry {
            time: UNIX_EPOCH + Duration::new(1_796_557_568, 123_456_789),
            request_id: "req-1",
            client_ip: Some("2001:db8::7".parse().unwrap()),
            method: "PATCH",
            host: "app.test",
            path: "/a/é\"b",
            query: Some("x=1&password=2"),
            protocol: "HTTP/2",
            status: 503,
            bytes_sent: u64::MAX,
            bytes_received: 7,
            waf_score: 12,
            duration: Duration::from_micros(1500),
            route: Some("/api/*"),
            upstream_node: Some("n1"),
            upstream_addr: Some("10.0.0.5:4000".parse().unwrap()),
            upstream_time: Some(Duration::from_nanos(42)),
            cache: Some("miss"),
            waf: Some("log"),
            waf_rules: Some("942100,941100"),
            limit: Some("rate"),
            trace_id: Some([0xab; 16]),
            user_agent: Some("ua"),
            referer: Some(""),
        }
    }

    fn same(a: &AccessEntry<'_>, b: &AccessEntry<'_>) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn records_round_trip_back_to_back() {
        let mut sparse = full();
        sparse.client_ip = Some("203.0.113.9".parse().unwrap());
        sparse.upstream_addr = Some("[::1]:8080".parse().unwrap());
        let mut empty = full();
        empty.client_ip = None;
        empty.query = None;
        empty.route = None;
        empty.upstream_node = None;
        empty.upstream_addr = None;
        empty.upstream_time = None;
        empty.cache = None;
        empty.waf = None;
        empty.waf_rules = None;
        empty.limit = None;
        empty.trace_id = None;
        empty.user_agent = None;
        empty.referer = None;
        let entries = [full(), sparse, empty];
        let mut buf = Vec::new();
        for e in &entries {
            encode(e, &mut buf);
        }
        let mut at = 0;
        for e in &entries {
            let (got, used) = decode(&buf[at..]).unwrap();
            same(&got, e);
            at += used;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn truncated_records_are_refused_not_misread() {
        let mut buf = Vec::new();
        encode(&full(), &mut buf);
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_none(), "prefix of {n} bytes");
        }
    }
}
