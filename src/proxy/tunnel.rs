//! WebSocket admission and connection timeouts. Upgrades pass only on routes
//! with `websocket = true`; elsewhere the upgrade is removed from the request so
//! neither Pingora nor Phoenix treats it as one. Open tunnels get the route's
//! idle limit instead of the ordinary client read timeout, which would otherwise
//! cut idle LiveView sockets.

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use pingora::proxy::Session;

use crate::routing::Route;
use crate::upstream::PeerRequirements;

/// Applies the route's upgrade policy and the downstream timeouts to `session`.
/// Returns whether this request will be forwarded as a websocket handshake.
pub fn admit(session: &mut Session, route: &Route, client_timeout: Duration) -> bool {
    let upgrade = session.is_upgrade_req();
    if upgrade && route.websocket {
        session.set_read_timeout(Some(route.websocket_idle_timeout));
        return true;
    }
    if upgrade {
        strip_upgrade(session);
    }
    // Keep-alive idle time is the limits' (`limits.keepalive_timeout`), and
    // must stay off once shutdown has started, so it is not touched here.
    session.set_read_timeout(Some(client_timeout));
    false
}

/// What the connection to Phoenix needs for this request.
pub fn peer_requirements(route: &Route, websocket: bool) -> PeerRequirements {
    PeerRequirements {
        read_timeout: if websocket {
            Some(route.websocket_idle_timeout)
        } else {
            route.upstream_read_timeout
        },
        allow_websocket: websocket,
    }
}

fn strip_upgrade(session: &mut Session) {
    let req = session.req_header_mut();
    req.remove_header(&UPGRADE);
    let kept: Option<String> = req
        .headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("upgrade"))
                .collect::<Vec<_>>()
                .join(", ")
        });
    req.remove_header(&CONNECTION);
    if let Some(kept) = kept.filter(|k| !k.is_empty()) {
        // Only valid tokens survived the split; a failure here just drops the header.
        let _ = req.insert_header(CONNECTION, kept);
    }
}
