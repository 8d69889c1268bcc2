//! URL-shaped parameter values, parsed rather than pattern-matched, for the
//! remote-file-inclusion (931010) and server-side-request-forgery (934020)
//! decisions. Both are questions about *where a URL points* and *what it
//! names*, which a parser answers for every spelling of an address
//! (`127.1`, `0x7f000001`, `2130706433`, `[::ffff:127.0.0.1]`), where a
//! regex only knows the spellings it lists.
//!
//! - RFI is a URL handed to code that *includes* what it names: a script or
//!   text file (`http://1.2.3.4/shell.txt`), or a URL ending in `?` so the
//!   include's own suffix becomes a query string. A page address — a path
//!   without a file extension, such as the `http://127.0.0.1:8080/counter`
//!   LiveView reports when a site is reached by its IP — names no file.
//! - SSRF is a URL that makes the server fetch from where only the server
//!   can reach: loopback, cloud metadata, cluster-internal names, private
//!   ranges (unless the URL is the site's own address, see `check`), or a
//!   scheme only used to talk raw protocols (gopher, dict, ...).
//!
//! Everything here is a single left-to-right scan of a value the caller has
//! already bounded; nothing allocates more than the value's length.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A URL split into the parts the decisions need (all lower-case: the input
/// is the canonical form).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Url<'a> {
    /// `None` for a scheme-less `host/path` value.
    pub scheme: Option<&'a [u8]>,
    pub host: &'a [u8],
    pub port: Option<&'a [u8]>,
    /// From the first `/` after the authority up to `?`/`#` (may be empty).
    pub path: &'a [u8],
    /// Whatever follows the path (`?...`, `#...`), empty if nothing.
    pub rest: &'a [u8],
}

/// Schemes a server-side fetcher understands. `file`/`ftp` are included:
/// both are ways to make the server read something.
const FETCH_SCHEMES: &[&[u8]] = &[
    b"http", b"https", b"ftp", b"ftps", b"file", b"gopher", b"dict", b"ldap", b"ldaps", b"tftp",
    b"jar", b"netdoc", b"sftp", b"smb", b"ws", b"wss",
];

/// Schemes with no use in a web parameter other than making a server speak
/// a raw protocol to an internal service (gopher to Redis/SMTP, dict to
/// memcached, ...): SSRF whatever the host.
const RAW_SCHEMES: &[&[u8]] = &[
    b"gopher", b"dict", b"jar", b"netdoc", b"tftp", b"ldap", b"ldaps",
];

/// Parses `scheme:[//][user@]host[:port][/path][?...]` (also with `\` or
/// any number of slashes, as lenient fetchers accept), or, with
/// `schemeless`, `host[:port]/...` where a path, query or fragment must
/// follow (a bare name is a setting, not an address).
pub(super) fn parse(v: &[u8], schemeless: bool) -> Option<Url<'_>> {
    let v = v.trim_ascii();
    let (scheme, after) = match v.iter().position(|&b| b == b':') {
        Some(i)
            if i > 0
                && v[0].is_ascii_alphabetic()
                && v[..i]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
                && FETCH_SCHEMES.contains(&&v[..i]) =>
        {
            (Some(&v[..i]), &v[i + 1..])
        }
        _ if schemeless => (None, v),
        _ => return None,
    };
    let after = if scheme.is_some() {
        let slashes = after
            .iter()
            .take_while(|b| matches!(b, b'/' | b'\\'))
            .count();
        &after[slashes..]
    } else {
        after
    };
    let auth_end = after
        .iter()
        .position(|b| matches!(b, b'/' | b'\\' | b'?' | b'#'))
        .unwrap_or(after.len());
    if scheme.is_none() && auth_end == after.len() {
        return None;
    }
    let mut auth = &after[..auth_end];
    if let Some(at) = auth.iter().rposition(|&b| b == b'@') {
        auth = &auth[at + 1..];
    }
    let (host, port) = split_port(auth);
    if host.is_empty() {
        return None;
    }
    let tail = &after[auth_end..];
    let path_end = tail
        .iter()
        .position(|b| matches!(b, b'?' | b'#'))
        .unwrap_or(tail.len());
    Some(Url {
        scheme,
        host,
        port,
        path: &tail[..path_end],
        rest: &tail[path_end..],
    })
}

fn split_port(auth: &[u8]) -> (&[u8], Option<&[u8]>) {
    if auth.first() == Some(&b'[') {
        // `[v6]:port`; an unclosed bracket is kept whole as the host.
        return match auth.iter().position(|&b| b == b']') {
            Some(close) => {
                let port = auth[close + 1..].strip_prefix(b":");
                (&auth[..=close], port)
            }
            None => (auth, None),
        };
    }
    // Two or more colons and no brackets: a bare IPv6 address, no port.
    if auth.iter().filter(|&&b| b == b':').count() > 1 {
        return (auth, None);
    }
    match auth.iter().position(|&b| b == b':') {
        Some(i) => (&auth[..i], Some(&auth[i + 1..])),
        None => (auth, None),
    }
}

/// Where an address points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// This machine: 127/8, ::1, 0.0.0.0, `localhost` and its aliases.
    Loopback,
    /// Link-local and the cloud providers' metadata services.
    Metadata,
    /// A name that only resolves inside a cluster (Kubernetes services).
    ClusterInternal,
    /// RFC 1918 / unique-local / CGNAT ranges.
    Private,
    /// Any other literal address.
    PublicIp,
    /// A DNS name not known to be internal.
    Name,
}

/// An IP address literal, in any spelling a resolver accepts, and whether
/// the spelling was the canonical dotted quad / bracketed v6 form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ip {
    V4(Ipv4Addr, bool),
    V6(Ipv6Addr),
}

/// `inet_aton` semantics: 1 to 4 dot-separated parts, each decimal, `0x`
/// hex or `0`-octal, the last part filling the remaining bytes (`127.1`,
/// `0177.0.0.1`, `2130706433`, `0x7f000001`). This is what the C resolvers
/// most fetchers use accept, so it is what an attacker can write.
fn ipv4(host: &[u8]) -> Option<(Ipv4Addr, bool)> {
    if host.is_empty() || host.len() > 64 {
        return None;
    }
    let parts: Vec<&[u8]> = host.split(|&b| b == b'.').collect();
    if parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut nums = [0u64; 4];
    let mut canonical = parts.len() == 4;
    for (i, p) in parts.iter().enumerate() {
        let (digits, radix) = if let Some(h) = p.strip_prefix(b"0x") {
            canonical = false;
            (h, 16)
        } else if p.len() > 1 && p[0] == b'0' {
            canonical = false;
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.len() > 16 {
            return None;
        }
        let mut n: u64 = 0;
        for &d in digits {
            let v = char::from(d).to_digit(radix)?;
            n = n * u64::from(radix) + u64::from(v);
        }
        nums[i] = n;
    }
    let last = parts.len() - 1;
    let mut value: u64 = 0;
    for (i, n) in nums.iter().enumerate().take(last) {
        if *n > 255 {
            return None;
        }
        value |= n << (24 - 8 * i);
    }
    let room = 32 - 8 * last;
    if nums[last] >= 1u64 << room {
        return None;
    }
    value |= nums[last];
    let addr = Ipv4Addr::from(u32::try_from(value).ok()?);
    Some((addr, canonical))
}

pub(super) fn ip(host: &[u8]) -> Option<Ip> {
    let inner = host
        .strip_prefix(b"[")
        .map(|h| h.strip_suffix(b"]").unwrap_or(h))
        .unwrap_or(host);
    if inner.contains(&b':') {
        // Zone ids (`fe80::1%eth0`) are not part of the address.
        let inner = inner.split(|&b| b == b'%').next().unwrap_or(inner);
        let s = std::str::from_utf8(inner).ok()?;
        return s.parse::<Ipv6Addr>().ok().map(Ip::V6);
    }
    ipv4(host).map(|(a, c)| Ip::V4(a, c))
}

fn reach_v4(a: Ipv4Addr) -> Reach {
    let o = a.octets();
    if a.is_loopback() || a.is_unspecified() {
        Reach::Loopback
    } else if a == Ipv4Addr::new(169, 254, 169, 254)
        // AWS ECS task metadata.
        || a == Ipv4Addr::new(169, 254, 170, 2)
        // Alibaba Cloud's metadata service.
        || a == Ipv4Addr::new(100, 100, 100, 200)
        // Oracle Cloud's metadata service.
        || a == Ipv4Addr::new(192, 0, 0, 192)
        // Azure's WireServer (host agent and metadata).
        || a == Ipv4Addr::new(168, 63, 129, 16)
    {
        Reach::Metadata
    } else if a.is_private() || a.is_link_local() || (o[0] == 100 && (64..128).contains(&o[1])) {
        // RFC 1918, link-local and the carrier-grade NAT range (RFC 6598).
        Reach::Private
    } else {
        Reach::PublicIp
    }
}

fn reach_ip(ip: Ip) -> Reach {
    match ip {
        Ip::V4(a, _) => reach_v4(a),
        Ip::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return reach_v4(v4);
            }
            let seg = a.segments();
            if a.is_loopback() || a.is_unspecified() {
                Reach::Loopback
            } else if (seg[0] & 0xffc0) == 0xfe80
                // AWS's IPv6 metadata endpoint (fd00:ec2::254).
                || a == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
            {
                Reach::Metadata
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                Reach::Private
            } else {
                Reach::PublicIp
            }
        }
    }
}

/// Host names that mean this machine (glibc/systemd aliases included).
const LOOPBACK_NAMES: &[&[u8]] = &[
    b"localhost",
    b"localhost.localdomain",
    b"ip6-localhost",
    b"ip6-loopback",
    b"ipv6-localhost",
    b"ipv6-loopback",
    b"localhost6",
    b"localhost6.localdomain6",
];

/// Metadata-service host names of the cloud providers (GCP, AWS, Azure,
/// Tencent, Equinix Metal/Packet, Rancher, DigitalOcean's alias).
const METADATA_NAMES: &[&[u8]] = &[
    b"metadata",
    b"metadata.google.internal",
    b"metadata.goog",
    b"instance-data",
    b"instance-data.ec2.internal",
    b"metadata.azure.com",
    b"metadata.tencentyun.com",
    b"metadata.packet.net",
    b"metadata.platformequinix.com",
    b"rancher-metadata",
];

pub(super) fn reach(host: &[u8]) -> Reach {
    if let Some(ip) = ip(host) {
        return reach_ip(ip);
    }
    let name = host.strip_suffix(b".").unwrap_or(host);
    if LOOPBACK_NAMES.contains(&name) || name.ends_with(b".localhost") {
        Reach::Loopback
    } else if METADATA_NAMES.contains(&name) {
        Reach::Metadata
    } else if name.ends_with(b".svc.cluster.local")
        || name.ends_with(b".svc")
        || name == b"kubernetes.default"
        || name.ends_with(b".cluster.local")
    {
        // Kubernetes service DNS (`svc.namespace.svc.cluster.local`).
        Reach::ClusterInternal
    } else {
        Reach::Name
    }
}

/// File extensions that are not code or text to include: stylesheets,
/// images, fonts and media a page links to (`_track_static` lists them,
/// image proxies fetch them). Any other extension on an IP URL reads as a
/// file handed to an include (`.php`, `.txt`, `.inc`, `.gif` polyglots are
/// all seen in RFI payloads, so the list is of what is *not* RFI).
const ASSET_EXTENSIONS: &[&[u8]] = &[
    b"css", b"png", b"jpg", b"jpeg", b"webp", b"avif", b"svg", b"ico", b"woff", b"woff2", b"ttf",
    b"otf", b"eot", b"mp3", b"mp4", b"webm", b"ogg", b"wav", b"map",
];

fn names_a_file(path: &[u8]) -> bool {
    let last = path
        .rsplit(|&b| b == b'/' || b == b'\\')
        .next()
        .unwrap_or(b"");
    match last.iter().rposition(|&b| b == b'.') {
        Some(dot) if dot + 1 < last.len() => {
            let ext = &last[dot + 1..];
            ext.len() <= 8
                && ext.iter().all(u8::is_ascii_alphanumeric)
                && !ASSET_EXTENSIONS.contains(&ext)
        }
        _ => false,
    }
}

/// Remote file inclusion: an absolute URL with a literal IP address (how
/// RFI droppers point at their payload host) that names a file to include,
/// or that ends in `?` / `?` plus nothing but another `?` (the include
/// suffix trick).
pub(super) fn remote_include(u: &Url) -> bool {
    u.scheme.is_some_and(|s| s != b"ws" && s != b"wss")
        && ip(u.host).is_some()
        && (names_a_file(u.path) || (u.rest.starts_with(b"?") && u.rest.iter().all(|&b| b == b'?')))
}

/// Server-side request forgery: the URL reaches what only the server can
/// reach. `own_host` is the request's Host (lower-case, port included):
/// a private address that is the site's own address (a site on a LAN
/// reached by its IP, whose pages link to themselves) reaches nothing the
/// client could not reach directly. Loopback and metadata addresses count
/// whatever the Host says, since the Host is the client's to choose.
pub(super) fn forgery(u: &Url, own_host: &[u8]) -> bool {
    if u.scheme.is_some_and(|s| RAW_SCHEMES.contains(&s)) {
        return true;
    }
    let parsed = ip(u.host);
    // An address spelled as one full 32-bit number (`2130706433`,
    // `0x7f000001`) or with hex/octal octets has no use but to slip past
    // filters (CRS 934120's class). Short forms (`0xabcdef`, `1.2.3`) are
    // judged by where they point only.
    let obfuscated = matches!(parsed, Some(Ip::V4(a, false)) if obfuscated_v4(u.host, a));
    if u.scheme.is_none() {
        // Without a scheme only unmistakable internal hosts count: `3/4`
        // is a fraction and `10.0.0.0/8` a network, not addresses to fetch.
        let unmistakable = match parsed {
            None => true,
            Some(Ip::V4(_, canonical)) => canonical,
            Some(Ip::V6(_)) => u.host.starts_with(b"["),
        };
        // Metadata services are only reached by URL: a scheme-less
        // `169.254.169.254/latest` is text about one, not a fetch.
        return unmistakable && matches!(reach(u.host), Reach::Loopback | Reach::ClusterInternal);
    }
    match reach(u.host) {
        Reach::Loopback | Reach::Metadata | Reach::ClusterInternal => true,
        Reach::Private => obfuscated || !same_authority(u, own_host),
        Reach::PublicIp => obfuscated,
        Reach::Name => false,
    }
}

fn obfuscated_v4(host: &[u8], a: Ipv4Addr) -> bool {
    let dots = host.iter().filter(|&&b| b == b'.').count();
    (dots == 0 && a.octets()[0] != 0) || dots == 3
}

fn same_authority(u: &Url, own_host: &[u8]) -> bool {
    let (h, p) = split_port(own_host);
    h == u.host && p == u.port
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lenient_spellings() {
        let u = parse(b"http:127.0.0.1", false).unwrap();
        assert_eq!(u.host, b"127.0.0.1");
        let u = parse(b"https://user:pw@[::1]:8080/a.php?x", false).unwrap();
        assert_eq!(
            (u.host, u.port, u.path, u.rest),
            (
                &b"[::1]"[..],
                Some(&b"8080"[..]),
                &b"/a.php"[..],
                &b"?x"[..]
            )
        );
        let u = parse(b"http:\\\\10.0.0.5\\share", false).unwrap();
        assert_eq!(u.host, b"10.0.0.5");
        assert!(parse(b"localhost", true).is_none());
        assert_eq!(parse(b"localhost:6379/", true).unwrap().host, b"localhost");
        assert!(parse(b"mailto:a@b", false).is_none());
    }

    #[test]
    fn every_spelling_of_loopback_is_loopback() {
        for h in [
            "127.0.0.1",
            "127.1",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "0",
            "0.0.0.0",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[0:0:0:0:0:0:0:1]",
            "localhost",
            "app.localhost",
        ] {
            assert_eq!(reach(h.as_bytes()), Reach::Loopback, "{h}");
        }
        assert_eq!(reach(b"169.254.169.254"), Reach::Metadata);
        assert_eq!(reach(b"2852039166"), Reach::Metadata);
        assert_eq!(reach(b"[::ffff:a9fe:a9fe]"), Reach::Metadata);
        assert_eq!(reach(b"metadata.google.internal"), Reach::Metadata);
        assert_eq!(reach(b"10.0.0.5"), Reach::Private);
        assert_eq!(reach(b"8.8.8.8"), Reach::PublicIp);
        assert_eq!(reach(b"example.com"), Reach::Name);
        assert_eq!(reach(b"256.1.1.1"), Reach::Name);
    }

    #[test]
    fn rfi_needs_a_file_or_the_question_mark_trick() {
        let rfi = |s: &str| remote_include(&parse(s.as_bytes(), false).unwrap());
        assert!(rfi("http://66.240.183.75/crash.php"));
        assert!(rfi("https://[2001:db8::1]/shell.txt"));
        assert!(rfi("ftp://203.0.113.9/x/inc.gif"));
        assert!(rfi("http://203.0.113.9/?"));
        // Page addresses and assets of a site reached by its IP.
        assert!(!rfi("http://127.0.0.1:8080/counter"));
        assert!(!rfi("http://10.0.0.5/posts/549"));
        assert!(!rfi("http://203.0.113.9:4000/"));
        assert!(!rfi("http://203.0.113.9/assets/app.css"));
        assert!(!rfi("http://203.0.113.9/users?page=2"));
        // Not an IP: a host name is the SSRF rule's concern, not this one.
        assert!(!rfi("https://example.com/a.php"));
    }

    #[test]
    fn ssrf_by_reach() {
        let ssrf =
            |s: &str, host: &str| forgery(&parse(s.as_bytes(), true).unwrap(), host.as_bytes());
        assert!(ssrf(
            "http://169.254.169.254/latest/meta-data/",
            "app.example.com"
        ));
        assert!(ssrf("http://192.0.0.192/latest/", "app.example.com"));
        assert!(ssrf("http:127.0.0.1", "app.example.com"));
        assert!(ssrf("gopher://example.com:70/_x", "app.example.com"));
        assert!(ssrf("http://0x7f000001/", "app.example.com"));
        assert!(ssrf("http://10.0.0.5/admin", "app.example.com"));
        assert!(ssrf("localhost:6379/", "app.example.com"));
        assert!(!ssrf("169.254.169.254/latest", "app.example.com"));
        assert!(!ssrf("http:0xabcdef", "app.example.com"));
        assert!(ssrf("http://3232235777/", "app.example.com"));
        assert!(!ssrf("3/4", "app.example.com"));
        assert!(!ssrf("10.0.0.0/8", "app.example.com"));
        assert!(ssrf(
            "http://redis.default.svc.cluster.local/",
            "app.example.com"
        ));
        // The site's own LAN address; public addresses and names.
        assert!(!ssrf("http://10.0.0.5/posts", "10.0.0.5"));
        assert!(!ssrf("http://10.0.0.5:8080/x", "10.0.0.5:8080"));
        assert!(!ssrf("http://203.0.113.9/x", "app.example.com"));
        assert!(!ssrf("https://example.com/callback", "app.example.com"));
        // The Host is the client's to choose: loopback counts whatever it says.
        assert!(ssrf("http://127.0.0.1:8080/x", "127.0.0.1:8080"));
    }
}
