//! Per-request upstream state (one field of the proxy's `Ctx`) and the calls
//! the proxy phases make: pick the node, remember the websocket connection,
//! decide retries, set the affinity cookie, register tunnels, settle counters.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::RawFd;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::liveview::JoinPeeker;
use super::node::{Node, NodeLease};
use super::pool::{Pool, SelectInput};
use super::tunnels::{ConnIdentity, TunnelGuard};
use super::{PeerRequirements, Upstreams};
use crate::exchange::UpstreamOutcome;

/// Bytes of a tunnel's client → node stream the LiveView peeker looks at.
const PEEK_BUDGET: usize = 16 << 10;
/// Text frames of a tunnel the LiveView peeker looks at.
const PEEK_FRAMES: u32 = 8;

/// The upstream side of one request, filled in as the phases run.
#[derive(Debug, Default)]
pub struct RequestState {
    pub(super) pool: Option<Arc<Pool>>,
    /// The node of the current attempt, counted in flight while held.
    pub(super) lease: Option<NodeLease>,
    pub(super) attempts: u32,
    /// Bit i: node i failed this request.
    pub(super) tried: u64,
    /// The node named by the request's valid affinity cookie.
    cookie_node: Option<usize>,
    /// Affinity applies (route and pool).
    sticky: bool,
    /// Response headers of the current attempt were accepted: no more retries.
    pub(super) response_started: bool,
    /// Upstream socket of a websocket attempt (from `connected_to_upstream`).
    conn: Option<ConnIdentity>,
    pub(super) tunnel: Option<TunnelGuard>,
    /// What the request record reports of the upstream side.
    pub(super) outcome: UpstreamOutcome,
    /// The LiveView peeker of an open tunnel (until it is done).
    peeker: Option<Box<JoinPeeker>>,
    /// The tunnel joined a LiveView: counted in `bext_liveview_sockets_open`.
    liveview: bool,
    tunnel_start: Option<Instant>,
}

/// What `upstream_peer` knows about the request.
#[derive(Debug, Clone, Copy)]
pub struct PeerRequest<'a> {
    pub req: &'a RequestHeader,
    pub upstream: usize,
    /// The route's `sticky` (None: follow the pool).
    pub route_sticky: Option<bool>,
    pub websocket: bool,
    pub client_ip: Option<IpAddr>,
    pub requirements: PeerRequirements,
}

impl Upstreams {
    /// `upstream_peer`: the node for this attempt (called again on each retry).
    pub fn peer(&self, st: &mut RequestState, r: PeerRequest) -> Result<Box<HttpPeer>> {
        let pool = self
            .get(r.upstream)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "route names no pool"))?;
        if st.pool.is_none() {
            st.pool = Some(pool.clone());
            st.sticky = r.route_sticky.unwrap_or(true) && pool.sticky().is_some();
        }
        let choice = pool
            .select(SelectInput {
                headers: &r.req.headers,
                client_ip: r.client_ip,
                sticky: st.sticky,
                websocket: r.websocket,
                tried: st.tried,
            })
            .ok_or_else(|| {
                Error::explain(ErrorType::HTTPStatus(503), "no healthy node in the pool")
            })?;
        if st.attempts == 0 {
            st.cookie_node = choice.cookie_node;
        }
        st.attempts += 1;
        if st.attempts > 1 {
            pool.metrics.retries.inc();
        }
        st.response_started = false;
        st.conn = None;
        let node = pool.nodes()[choice.index].clone();
        let peer = node.peer(r.requirements);
        let o = &mut st.outcome;
        o.pool = Some(r.upstream);
        o.node = Some(node.index);
        o.node_id = Some(node.label.clone());
        o.addr = Some(node.addr);
        o.attempts = st.attempts;
        o.attempt_start = Some(Instant::now());
        o.response_time = None;
        st.lease = Some(NodeLease::new(node));
        Ok(peer)
    }
}

/// A 101 (websocket), a long-poll answer, or a successful HTML document.
fn affinity_matters(resp: &ResponseHeader, longpoll: bool) -> bool {
    let status = resp.status.as_u16();
    if status == 101 || longpoll {
        return true;
    }
    if !(200..400).contains(&status) {
        return false;
    }
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| ct.split(';').next().unwrap_or("").trim())
        .is_some_and(|m| {
            m.eq_ignore_ascii_case("text/html") || m.eq_ignore_ascii_case("application/xhtml+xml")
        })
}

impl RequestState {
    pub fn node(&self) -> Option<&Arc<Node>> {
        self.lease.as_ref().map(NodeLease::node)
    }

    /// The address of the node of the current attempt (for logs).
    pub fn node_addr(&self) -> Option<SocketAddr> {
        self.node().map(|n| n.addr)
    }

    /// `connected_to_upstream`: remembers the socket of a websocket attempt.
    pub fn connected(&mut self, websocket: bool, fd: RawFd) {
        if websocket {
            self.conn = ConnIdentity::of(fd);
        }
    }

    /// `response_filter`: registers a forwarded 101 as a tunnel of its node
    /// and pins the client to the serving node with the affinity cookie
    /// where affinity matters: the websocket, a long-poll (`longpoll`: the
    /// request is to Phoenix's `…/longpoll` transport) and the HTML document
    /// that mounts the LiveView. Assets, JSON and error answers get no
    /// cookie, so they stay cacheable by browsers and shared caches.
    pub fn response(
        &mut self,
        resp: &mut ResponseHeader,
        secure: bool,
        longpoll: bool,
    ) -> Result<()> {
        let Some(node) = self.node().cloned() else {
            return Ok(());
        };
        if resp.status.as_u16() == 101 {
            if let Some(conn) = self.conn.take() {
                self.tunnel = Some(TunnelGuard::register(&node.tunnels, conn));
                self.tunnel_start = Some(Instant::now());
                self.peeker = Some(Box::new(JoinPeeker::new(PEEK_BUDGET, PEEK_FRAMES)));
            }
        }
        if self.sticky && self.cookie_node != Some(node.index) && affinity_matters(resp, longpoll) {
            let cookie = self
                .pool
                .as_ref()
                .and_then(|p| p.sticky())
                .and_then(|s| s.set_cookie(&node.id, secure));
            if let Some(cookie) = cookie {
                resp.append_header(http::header::SET_COOKIE, cookie)?;
            }
        }
        Ok(())
    }

    /// `response_body_filter` at the end of a tunnel's stream to the client.
    pub fn tunnel_end(&mut self, body: &mut Option<bytes::Bytes>) {
        if let Some(t) = &mut self.tunnel {
            t.farewell(body);
        }
    }

    /// `response_body_filter` of a tunnel: the node's frames to the client.
    pub fn tunnel_from_node(&mut self, chunk: Option<&[u8]>) {
        if let (Some(t), Some(chunk)) = (&mut self.tunnel, chunk) {
            t.from_node(chunk);
        }
    }

    /// The last byte of a (non-tunnel) response passed through: the node's
    /// work is done, so it stops counting as in flight now rather than after
    /// the client has the response. Otherwise a client's next request can see
    /// its previous one still counted, and `least_conn` would shun the node.
    pub fn response_done(&mut self) {
        if self.tunnel.is_none() {
            self.lease = None;
        }
    }

    /// `request_body_filter` of a tunnel: the client's frames, peeked at for
    /// Phoenix channel joins until the peeker's budget is spent.
    pub fn tunnel_data(&mut self, chunk: Option<&[u8]>, client: Option<IpAddr>) {
        let (Some(peeker), Some(chunk)) = (self.peeker.as_mut(), chunk) else {
            return;
        };
        let seen = peeker.feed(chunk);
        let done = peeker.done();
        if done {
            self.peeker = None;
        }
        if seen.joins == 0 {
            return;
        }
        let Some(node) = self.node().cloned() else {
            return;
        };
        let m = &node.metrics;
        m.channel_joins.inc_by(u64::from(seen.joins));
        m.liveview_joins.inc_by(u64::from(seen.liveview_joins));
        if seen.liveview_joins > 0 && !self.liveview {
            self.liveview = true;
            m.liveview_sockets.inc();
            let reconnect = match (&self.pool, client) {
                (Some(pool), Some(ip)) => pool.reconnects.is_reconnect(client_key(ip), now_ms()),
                _ => false,
            };
            if reconnect {
                m.liveview_reconnects.inc();
            }
        }
    }

    /// `logging`: releases the node (in flight) and the tunnel registration,
    /// settles the tunnel's metrics and returns the upstream part of the
    /// request record. (Failed attempts were counted by the retry decisions.)
    pub fn finish(&mut self, client: Option<IpAddr>) -> UpstreamOutcome {
        if let (Some(start), Some(node)) = (self.tunnel_start.take(), self.node().cloned()) {
            node.metrics
                .tunnel_duration
                .observe(start.elapsed().as_secs_f64());
            if self.liveview {
                node.metrics.liveview_sockets.dec();
                if let (Some(pool), Some(ip)) = (&self.pool, client) {
                    pool.reconnects.closed(client_key(ip), now_ms());
                }
            }
        }
        self.liveview = false;
        self.peeker = None;
        self.tunnel = None;
        self.lease = None;
        std::mem::take(&mut self.outcome)
    }
}

fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Milliseconds on a monotonic clock (for the reconnect table).
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}
