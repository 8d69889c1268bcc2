//! Per-request upstream state (one field of the proxy's `Ctx`) and the calls
//! the proxy phases make: pick the node, remember the websocket connection,
//! decide retries, set the affinity cookie, register tunnels, settle counters.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::io::RawFd;
use std::sync::Arc;

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::node::{Node, NodeLease};
use super::pool::{Pool, SelectInput};
use super::tunnels::{ConnIdentity, TunnelGuard};
use super::{PeerRequirements, Upstreams};

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
        st.response_started = false;
        st.conn = None;
        let node = pool.nodes()[choice.index].clone();
        let peer = node.peer(r.requirements);
        st.lease = Some(NodeLease::new(node));
        Ok(peer)
    }
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
    /// and pins the client to the serving node with the affinity cookie.
    pub fn response(&mut self, resp: &mut ResponseHeader, secure: bool) -> Result<()> {
        let Some(node) = self.node().cloned() else {
            return Ok(());
        };
        if resp.status.as_u16() == 101 {
            if let Some(conn) = self.conn.take() {
                self.tunnel = Some(TunnelGuard::register(&node.tunnels, conn));
            }
        }
        if self.sticky && self.cookie_node != Some(node.index) {
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
    pub fn tunnel_end(&self, body: &mut Option<bytes::Bytes>) {
        if let Some(t) = &self.tunnel {
            t.farewell(body);
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

    /// `logging`: releases the node (in flight) and the tunnel registration.
    /// (Failed attempts were already counted by the retry decisions.)
    pub fn finish(&mut self) {
        self.tunnel = None;
        self.lease = None;
    }
}
