//! Open websocket tunnels per node, and closing them from outside the proxy.
//!
//! Pingora's duplex loop (`proxy_h1.rs`) has no hook that wakes for an event
//! of ours: body filters only run when bytes arrive, so an idle LiveView
//! socket would never notice a flag. What does wake it is its own upstream
//! socket. When a 101 is forwarded we record the upstream connection's fd
//! (from `connected_to_upstream`) with its local and peer addresses; closing a
//! tunnel is `shutdown(fd, SHUT_RDWR)` on that socket. The upstream read
//! returns EOF, Pingora ends the upgraded response, and the client's
//! connection is closed, so the LiveView client reconnects (to a healthy node).
//!
//! Safety of acting on a raw fd: the tunnel deregisters when its request ends
//! (the guard lives in the request context), and before the shutdown the fd's
//! local and peer addresses are compared with the recorded ones, so a number
//! reused by another socket in the short gap between Pingora closing it and
//! the context being dropped is left alone.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::io::{FromRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

/// The frame a client gets when bext ends its tunnel: WebSocket Close with
/// status 1001 "going away" (RFC 6455 §7.4.1), unmasked as server frames are.
/// Phoenix's JS client treats it as a clean close and reconnects.
pub const GOING_AWAY_FRAME: &[u8] = &[
    0x88, 0x0C, 0x03, 0xE9, b'g', b'o', b'i', b'n', b'g', b' ', b'a', b'w', b'a', b'y',
];

/// The frame a client gets when its node's side of the tunnel ends without
/// a Close frame (the node died, or dropped the connection): status 1011
/// "node gone", so the browser sees a close it reconnects from, as after a
/// drain, instead of a bare TCP close (1006).
pub const NODE_GONE_FRAME: &[u8] = &[
    0x88, 0x0B, 0x03, 0xF3, b'n', b'o', b'd', b'e', b' ', b'g', b'o', b'n', b'e',
];

/// Where the node → client byte stream of a tunnel is in its WebSocket
/// framing (RFC 6455 §5.2): enough to know whether the node sent a Close
/// frame and whether a frame of ours may be appended (only between frames).
/// Constant state; only frame headers are read, payloads are skipped.
#[derive(Debug, Default)]
pub struct FrameTracker {
    header: [u8; 14],
    have: u8,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    closed: bool,
}

impl FrameTracker {
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && !self.closed {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            self.header[usize::from(self.have)] = data[0];
            self.have += 1;
            data = &data[1..];
            let Some(need) = self.header_len() else {
                continue;
            };
            if usize::from(self.have) < need {
                continue;
            }
            let h = &self.header;
            let len7 = h[1] & 0x7f;
            self.remaining = match len7 {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                n => u64::from(n),
            };
            self.closed = h[0] & 0x0f == 0x8;
            self.have = 0;
        }
    }

    /// The header's length once its first two bytes are known.
    fn header_len(&self) -> Option<usize> {
        if self.have < 2 {
            return None;
        }
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    /// The node sent a Close frame.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Between two frames: a frame of ours can be appended.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.have == 0
    }
}

/// The identity of one upstream TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnIdentity {
    fd: RawFd,
    local: SocketAddr,
    peer: SocketAddr,
}

/// Runs `f` on a borrowed view of `fd` without ever closing it.
fn with_socket<T>(fd: RawFd, f: impl FnOnce(&TcpStream) -> T) -> T {
    // SAFETY: the TcpStream is never dropped (ManuallyDrop), so it does not
    // close `fd`; the calls made on it (getsockname, getpeername, shutdown) are
    // harmless on any fd and fail cleanly on one that is not a socket.
    let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    f(&s)
}

impl ConnIdentity {
    /// Reads the addresses of the connected socket `fd`.
    pub fn of(fd: RawFd) -> Option<ConnIdentity> {
        if fd < 0 {
            return None;
        }
        with_socket(fd, |s| {
            Some(ConnIdentity {
                fd,
                local: s.local_addr().ok()?,
                peer: s.peer_addr().ok()?,
            })
        })
    }

    /// Shuts the connection down if `fd` still is this connection.
    fn shutdown(&self) -> bool {
        if ConnIdentity::of(self.fd) != Some(*self) {
            return false;
        }
        with_socket(self.fd, |s| s.shutdown(Shutdown::Both).is_ok())
    }
}

/// One registered tunnel: its upstream connection, and whether bext is the
/// one ending it (so the client gets a 1001 close frame, not a bare EOF).
#[derive(Debug, Clone)]
struct Entry {
    conn: ConnIdentity,
    closing: Arc<AtomicBool>,
}

impl Entry {
    fn close(&self) -> bool {
        self.closing.store(true, Ordering::Release);
        self.conn.shutdown()
    }
}

/// The open tunnels of one node.
#[derive(Debug, Default)]
pub struct TunnelSet {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Entry>>,
}

impl TunnelSet {
    pub fn len(&self) -> usize {
        self.open.lock().map_or(0, |m| m.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, entry: Entry) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.open.lock() {
            m.insert(id, entry);
        }
        id
    }

    /// Closes one tunnel now if it is still open; true when it was.
    fn close_one(&self, id: u64) -> bool {
        let entry = self.open.lock().ok().and_then(|m| m.get(&id).cloned());
        entry.is_some_and(|e| e.close())
    }

    fn ids(&self) -> Vec<u64> {
        self.open
            .lock()
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&id);
        }
    }

    /// Closes every tunnel open now, spread evenly over `spread` so that the
    /// clients do not all reconnect at once. Must run inside a tokio runtime.
    pub fn close_all(self: &Arc<Self>, spread: Duration) {
        if self.is_empty() {
            return;
        }
        let sets = [self.clone()];
        tokio::spawn(async move {
            let closed = close_all_of(&sets, spread).await;
            log::info!("closed {closed} websocket tunnel(s)");
        });
    }
}

/// Closes every open tunnel of `sets`, spread evenly over `spread`, and returns
/// how many were closed. Used when the process stops (graceful stop or
/// upgrade): awaited in place, so the runtime stays up while it works.
pub async fn close_all_of(sets: &[Arc<TunnelSet>], spread: Duration) -> usize {
    let all: Vec<(&Arc<TunnelSet>, u64)> = sets
        .iter()
        .flat_map(|s| s.ids().into_iter().map(move |id| (s, id)))
        .collect();
    if all.is_empty() {
        return 0;
    }
    let step = spread / all.len() as u32;
    let mut closed = 0;
    for (i, (set, id)) in all.iter().enumerate() {
        if i > 0 && !step.is_zero() {
            tokio::time::sleep(step).await;
        }
        // Still open? (It may have ended on its own meanwhile.)
        if set.close_one(*id) {
            closed += 1;
        }
    }
    closed
}

/// Keeps a tunnel registered while its request lives; deregisters on drop.
#[derive(Debug)]
pub struct TunnelGuard {
    set: Arc<TunnelSet>,
    id: u64,
    closing: Arc<AtomicBool>,
    frames: FrameTracker,
}

impl TunnelGuard {
    pub fn register(set: &Arc<TunnelSet>, conn: ConnIdentity) -> TunnelGuard {
        let closing = Arc::new(AtomicBool::new(false));
        let id = set.insert(Entry {
            conn,
            closing: closing.clone(),
        });
        TunnelGuard {
            set: set.clone(),
            id,
            closing,
            frames: FrameTracker::default(),
        }
    }

    /// Bytes the node sent to the client.
    pub fn from_node(&mut self, chunk: &[u8]) {
        self.frames.feed(chunk);
    }

    /// At the end of the tunnel's stream to the client: unless the node sent
    /// a Close frame itself, the client's last bytes are one — 1001 when bext
    /// ended the tunnel (drain, stop), 1011 when the node's side just ended.
    /// Never inside a half-sent frame (that would corrupt the stream).
    pub fn farewell(&mut self, body: &mut Option<Bytes>) {
        if let Some(last) = body.as_deref() {
            self.frames.feed(last);
        }
        if self.frames.closed() || !self.frames.at_boundary() {
            return;
        }
        let frame = if self.closing.load(Ordering::Acquire) {
            GOING_AWAY_FRAME
        } else {
            NODE_GONE_FRAME
        };
        *body = Some(match body.take() {
            Some(data) if !data.is_empty() => {
                let mut b = bytes::BytesMut::with_capacity(data.len() + frame.len());
                b.extend_from_slice(&data);
                b.extend_from_slice(frame);
                b.freeze()
            }
            _ => Bytes::from_static(frame),
        });
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.set.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::io::AsRawFd;

    #[test]
    fn the_tracker_follows_frames_across_chunks() {
        let mut t = FrameTracker::default();
        // A 3-byte text frame, a 300-byte binary frame (16-bit length), split anywhere.
        let mut stream = vec![0x81, 3, b'a', b'b', b'c', 0x82, 126, 0x01, 0x2c];
        stream.extend(std::iter::repeat_n(7u8, 300));
        for piece in stream.chunks(7) {
            t.feed(piece);
            assert!(!t.closed());
        }
        assert!(t.at_boundary());
        t.feed(&[0x82, 5, 1, 2]);
        assert!(!t.at_boundary(), "inside a frame");
        t.feed(&[3, 4, 5]);
        assert!(t.at_boundary());
        t.feed(&NODE_GONE_FRAME[..1]);
        assert!(!t.closed() && !t.at_boundary());
        t.feed(&NODE_GONE_FRAME[1..]);
        assert!(t.closed());
        // A masked header (client-style) is skipped by its 4 key bytes too.
        let mut m = FrameTracker::default();
        m.feed(&[0x81, 0x82, 9, 9, 9, 9, b'h', b'i']);
        assert!(m.at_boundary() && !m.closed());
    }

    #[tokio::test]
    async fn close_all_shuts_the_recorded_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        let set = Arc::new(TunnelSet::default());
        let guard = TunnelGuard::register(&set, ConnIdentity::of(client.as_raw_fd()).unwrap());
        assert_eq!(set.len(), 1);
        set.close_all(Duration::ZERO);
        // The peer sees EOF once our side is shut down.
        server_side
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::task::spawn_blocking(move || server_side.read(&mut buf).unwrap())
            .await
            .unwrap();
        assert_eq!(n, 0);
        drop(guard);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn a_reused_fd_is_left_alone() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut id = ConnIdentity::of(client.as_raw_fd()).unwrap();
        id.peer = "127.0.0.1:1".parse().unwrap();
        assert!(!id.shutdown());
    }
}
