//! `[limits]` and the per-route limit keys (`route_rules[].rate`,
//! `route_rules[].max_body`): the user-facing serde shape and its validation
//! into [`LimitsPlan`]. Defaults follow the seed (ReverseIt's router-style
//! defaults): 8 KiB request target and header line, 64 KiB of headers, 100
//! headers, 100 MiB bodies, 10 s to send the headers, 90 s keep-alive idle.

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};
use super::user::RouteRule;
use crate::limits::{LimitsPlan, RateSpec, RouteLimits};

/// `[limits]` as written in the file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub rate: Option<RateSection>,
    pub allow: Option<Vec<String>>,
    pub ipv6_prefix: Option<u8>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_websockets_per_ip: Option<usize>,
    pub max_request_target: Option<ByteSize>,
    pub max_header_line: Option<ByteSize>,
    pub max_headers_size: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub max_body: Option<ByteSize>,
    pub header_timeout: Option<HumanDuration>,
    pub keepalive_timeout: Option<HumanDuration>,
    pub min_body_rate: Option<ByteSize>,
    pub body_rate_grace: Option<HumanDuration>,
    pub min_send_rate: Option<ByteSize>,
}

/// `rate = { requests = 50, per = "1s", burst = 100 }`.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    pub requests: u32,
    pub per: HumanDuration,
    pub burst: Option<u32>,
}

/// One problem: (key, reason); `plan.rs` adds the file name.
pub type KeyError = (String, String);

pub fn compile(
    section: LimitsSection,
    routes: &[RouteRule],
    parse_cidr: impl Fn(&str) -> Result<IpNet, String>,
) -> Result<LimitsPlan, Vec<KeyError>> {
    let mut errs: Vec<KeyError> = Vec::new();
    let d = LimitsPlan::default();
    let rate = section
        .rate
        .and_then(|r| rate_spec(&mut errs, "limits.rate", r));
    let allow = section
        .allow
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, c)| match parse_cidr(c) {
            Ok(n) => Some(n),
            Err(e) => {
                errs.push((format!("limits.allow[{i}]"), e));
                None
            }
        })
        .collect();
    let ipv6_prefix = section.ipv6_prefix.unwrap_or(d.ipv6_prefix);
    if ipv6_prefix == 0 || ipv6_prefix > 128 {
        errs.push((
            "limits.ipv6_prefix".into(),
            "must be between 1 and 128 (default 64)".into(),
        ));
    }
    let bytes = |v: Option<ByteSize>, default: u64| v.map_or(default, |b| b.0);
    let plan = LimitsPlan {
        rate,
        allow,
        ipv6_prefix,
        max_connections: section.max_connections.unwrap_or(d.max_connections),
        max_connections_per_ip: section
            .max_connections_per_ip
            .unwrap_or(d.max_connections_per_ip),
        max_websockets_per_ip: section
            .max_websockets_per_ip
            .unwrap_or(d.max_websockets_per_ip),
        max_request_target: bytes(section.max_request_target, d.max_request_target),
        max_header_line: bytes(section.max_header_line, d.max_header_line),
        max_headers_size: bytes(section.max_headers_size, d.max_headers_size),
        max_headers: section.max_headers.unwrap_or(d.max_headers),
        max_body: bytes(section.max_body, d.max_body),
        header_timeout: section.header_timeout.map_or(d.header_timeout, |t| t.0),
        keepalive_timeout: section
            .keepalive_timeout
            .map_or(d.keepalive_timeout, |t| t.0),
        min_body_rate: bytes(section.min_body_rate, d.min_body_rate),
        body_rate_grace: section.body_rate_grace.map_or(d.body_rate_grace, |t| t.0),
        min_send_rate: section.min_send_rate.map(|b| b.0).filter(|b| *b > 0),
        routes: routes
            .iter()
            .enumerate()
            .map(|(i, r)| RouteLimits {
                rate: r
                    .rate
                    .and_then(|s| rate_spec(&mut errs, &format!("route_rules[{i}].rate"), s)),
                max_body: r.max_body.map(|b| b.0),
            })
            .collect(),
    };
    for (key, v) in [
        ("limits.max_request_target", plan.max_request_target),
        ("limits.max_header_line", plan.max_header_line),
        ("limits.max_headers_size", plan.max_headers_size),
    ] {
        if v < 256 {
            errs.push((key.into(), "must be at least 256B".into()));
        }
    }
    if plan.max_headers_size > 1 << 20 {
        errs.push((
            "limits.max_headers_size".into(),
            "at most 1MiB: Pingora's parser refuses larger headers with 400 anyway".into(),
        ));
    }
    if plan.max_headers == 0 || plan.max_headers > 256 {
        errs.push((
            "limits.max_headers".into(),
            "must be between 1 and 256 (Pingora's parser refuses more than 256 with 400)".into(),
        ));
    }
    for (key, t) in [
        ("limits.header_timeout", plan.header_timeout),
        ("limits.keepalive_timeout", plan.keepalive_timeout),
    ] {
        if t < Duration::from_millis(100) {
            errs.push((key.into(), "must be at least 100ms".into()));
        }
    }
    if errs.is_empty() {
        Ok(plan)
    } else {
        Err(errs)
    }
}

fn rate_spec(errs: &mut Vec<KeyError>, key: &str, r: RateSection) -> Option<RateSpec> {
    if r.requests == 0 {
        errs.push((format!("{key}.requests"), "must be at least 1".into()));
        return None;
    }
    if r.per.0 < Duration::from_millis(1) || r.per.0 > Duration::from_secs(86_400) {
        errs.push((format!("{key}.per"), "must be between 1ms and 24h".into()));
        return None;
    }
    let burst = r.burst.unwrap_or(r.requests);
    if burst == 0 {
        errs.push((
            format!("{key}.burst"),
            "must be at least 1 (it is the bucket size)".into(),
        ));
        return None;
    }
    Some(RateSpec {
        requests: r.requests,
        per: r.per.0,
        burst,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::load_str;

    const BASE: &str = "[upstreams.phoenix]\nnodes = [\"127.0.0.1:4000\"]\n";

    fn load(extra: &str, route_extra: &str) -> Result<crate::config::Plan, Vec<String>> {
        let text = format!(
            "{BASE}{extra}\n[[route_rules]]\npattern = \"/users/log_in\"\nproxy = \"phoenix\"\n{route_extra}\n\
             [[route_rules]]\npattern = \"/*\"\nproxy = \"phoenix\"\n"
        );
        load_str(Path::new("/etc/bext/t.toml"), &text)
            .map_err(|e| e.0.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn defaults_follow_the_seed() {
        let p = load("", "").unwrap().limits;
        assert_eq!(p.max_request_target, 8192);
        assert_eq!(p.max_header_line, 8192);
        assert_eq!(p.max_headers_size, 65536);
        assert_eq!(p.max_headers, 100);
        assert_eq!(p.max_body, 100 << 20);
        assert_eq!(p.header_timeout.as_secs(), 10);
        assert_eq!(p.keepalive_timeout.as_secs(), 90);
        assert_eq!(p.ipv6_prefix, 64);
        assert!(p.rate.is_none());
        assert_eq!(p.routes.len(), 2);
    }

    #[test]
    fn global_and_route_limits_compile() {
        let p = load(
            "[limits]\nrate = { requests = 50, per = \"1s\", burst = 100 }\nallow = [\"10.0.0.0/8\"]",
            "rate = { requests = 5, per = \"1m\" }\nmax_body = \"1MiB\"",
        )
        .unwrap()
        .limits;
        let g = p.rate.unwrap();
        assert_eq!((g.requests, g.per.as_secs(), g.burst), (50, 1, 100));
        let r = p.routes[0].rate.unwrap();
        assert_eq!(
            (r.requests, r.per.as_secs(), r.burst),
            (5, 60, 5),
            "burst defaults to requests"
        );
        assert_eq!(p.routes[0].max_body, Some(1 << 20));
        assert_eq!(p.routes[1].max_body, None);
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("[limits]\nrate = { requests = 0, per = \"1s\" }", "").unwrap_err();
        assert!(
            e[0].contains("/etc/bext/t.toml: limits.rate.requests: must be at least 1"),
            "{e:?}"
        );
        let e = load("", "rate = { requests = 1, per = \"1s\", brust = 3 }").unwrap_err();
        assert!(e[0].contains("route_rules[0].rate.brust"), "{e:?}");
        let e = load("[limits]\nallow = [\"10.0.0.0/99\"]", "").unwrap_err();
        assert!(e[0].contains("limits.allow[0]"), "{e:?}");
        let e = load("[limits]\nmax_headers = 300", "").unwrap_err();
        assert!(
            e[0].contains("limits.max_headers: must be between 1 and 256"),
            "{e:?}"
        );
        let e = load("[limits]\nmax_body = 12", "").unwrap_err();
        assert!(e[0].contains("limits.max_body"), "{e:?}");
    }
}
