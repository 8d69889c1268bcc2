//! The QUIC socket across a graceful upgrade: both processes hold the UDP
//! port at once (`SO_REUSEPORT`), and a classic BPF program attached by the
//! newest process to the port's reuseport group tells the kernel which of
//! them gets each datagram, reading the destination connection ID:
//!
//! - every connection ID this process issues is [`CID_LEN`] bytes whose first
//!   4 are a random per-process [`tag`] ([`TaggedCids`]);
//! - Initial and 0-RTT packets (new connections, client-chosen DCID) go to the
//!   newest socket; Handshake and short-header packets whose DCID carries the
//!   newest process's tag go to it too; everything else goes to index 0, the
//!   old process, whose connections thus keep receiving their packets;
//! - a packet that still reaches the wrong process (before the program is
//!   attached, or a stray one) fails [`TaggedCids::validate`], and quinn then
//!   drops it silently instead of answering with a stateless reset, which
//!   would kill the other process's connection.
//!
//! The kernel's reuseport group is an array: a new socket is appended; when
//! one closes, the last one moves into its slot; a program returning an
//! index past the end falls back to the 4-tuple hash. The program returns
//! 1 for "newest", which is right for the two cases that occur: alone on the
//! port (1 is past the end: the hash picks the only socket), and old (0) +
//! new (1). When the old one closes, the new one moves to slot 0 and is alone.
//! A third process (an upgrade started while the previous upgrade's old
//! process still drains) would break that order, so [`holders`] lets the
//! newest wait until at most one other socket holds the port.
//!
//! Linux only; elsewhere the socket is bound without `SO_REUSEPORT` and the
//! new process waits for the old one to let go (see the module doc of `h3`).

use std::io;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use quinn_proto::{InvalidCid, RandomConnectionIdGenerator};

/// Length of the connection IDs bext issues: the 4-byte tag + 4 random bytes.
pub const CID_LEN: usize = 8;

/// Returned by the steering program for "the newest socket" (see the module doc).
pub const NEWEST: u32 = 1;
/// ... and for "the old process".
pub const OLDEST: u32 = 0;

static TAG: LazyLock<u32> = LazyLock::new(|| {
    // quinn's own generator is a CSPRNG (rand's thread RNG).
    let cid = RandomConnectionIdGenerator::new(4).generate_cid();
    u32::from_be_bytes([cid[0], cid[1], cid[2], cid[3]])
});

/// This process's tag: the first 4 bytes (big-endian) of every connection ID it issues.
pub fn tag() -> u32 {
    *TAG
}

/// Connection IDs that name the process that issued them.
///
/// The shared prefix lets an observer tell that two connections reach the
/// same bext process (as QUIC-LB server IDs do), not link the IDs of one
/// connection to each other beyond that: the rest is random per ID.
pub struct TaggedCids {
    tag: [u8; 4],
    random: RandomConnectionIdGenerator,
}

impl TaggedCids {
    pub fn new(tag: u32) -> TaggedCids {
        TaggedCids {
            tag: tag.to_be_bytes(),
            random: RandomConnectionIdGenerator::new(CID_LEN - 4),
        }
    }
}

impl ConnectionIdGenerator for TaggedCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[..4].copy_from_slice(&self.tag);
        bytes[4..].copy_from_slice(&self.random.generate_cid());
        ConnectionId::new(&bytes)
    }

    /// Only this process's IDs: quinn answers an unknown short-header packet
    /// with a stateless reset unless this says the ID is not ours.
    fn validate(&self, cid: &ConnectionId) -> Result<(), InvalidCid> {
        if cid.len() == CID_LEN && cid[..4] == self.tag {
            Ok(())
        } else {
            Err(InvalidCid)
        }
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// quinn's endpoint config with [`TaggedCids`] of this process's tag.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::default();
    let tag = tag();
    config.cid_generator(move || Box::new(TaggedCids::new(tag)));
    config
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// linux/bpf_common.h
const LD_B_ABS: u16 = 0x30; // BPF_LD (0) | BPF_B (0x10) | BPF_ABS (0x20)
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const ALU_AND_K: u16 = 0x04 | 0x50; // BPF_ALU | BPF_AND | BPF_K
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The steering program for the newest process, of tag `tag`. The kernel
/// runs it with the packet data starting at the UDP payload; a load past the
/// end of the datagram ends it with 0 (the old process).
///
/// QUIC v1 (and the drafts quinn also speaks): byte 0 bit 0x80 = long
/// header, bits 0x30 = type (0 Initial, 1 0-RTT, 2 Handshake, 3 Retry);
/// long header: version at 1..5, DCID length at 5, DCID at 6; short header:
/// DCID at 1 (its length is the receiver's choice: [`CID_LEN`]).
pub fn program(tag: u32) -> Vec<Insn> {
    // Jump offsets count from the next instruction.
    vec![
        /* 0 */ insn(LD_B_ABS, 0, 0, 0),
        /* 1 */ insn(JSET_K, 0, 6, 0x80), // long → 2, short → 8
        /* 2 */ insn(ALU_AND_K, 0, 0, 0x30),
        /* 3 */
        insn(JEQ_K, 0, 7, 0x20), // Handshake → 4, else (new connection) → 11
        /* 4 */ insn(LD_B_ABS, 0, 0, 5),
        /* 5 */ insn(JEQ_K, 0, 4, CID_LEN as u32), // not one of ours → 10
        /* 6 */ insn(LD_W_ABS, 0, 0, 6),
        /* 7 */ insn(JEQ_K, 3, 2, tag), // → 11 / 10
        /* 8 */ insn(LD_W_ABS, 0, 0, 1),
        /* 9 */ insn(JEQ_K, 1, 0, tag), // → 11 / 10
        /* 10 */ insn(RET_K, 0, 0, OLDEST),
        /* 11 */ insn(RET_K, 0, 0, NEWEST),
    ]
}

/// Binds `addr` so that the next process can bind it too; on Linux also
/// attaches the steering program (failure to attach is logged, not fatal:
/// the socket still serves, only the old process's connections may stall
/// during an upgrade). Non-blocking, as quinn's runtime needs it.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let sock = bind_shared(addr)?;
    sock.set_nonblocking(true)?;
    #[cfg(target_os = "linux")]
    match steer(&sock, tag()) {
        Ok(()) => {
            log::debug!("http3: udp {addr}: datagrams steered to this process by connection id")
        }
        Err(e) => log::warn!(
            "http3: udp {addr}: cannot attach the reuseport steering program ({e}); \
             during a graceful upgrade, QUIC connections of the old process may stall"
        ),
    }
    #[cfg(not(target_os = "linux"))]
    log::info!(
        "http3: udp {addr}: no reuseport steering on this platform; a graceful upgrade \
         leaves an HTTP/3 gap until the old process lets go of the port"
    );
    Ok(sock)
}

#[cfg(target_os = "linux")]
fn bind_shared(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use std::os::fd::AsRawFd;
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket we own, with a c_int option value.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Elsewhere `SO_REUSEPORT` does not share datagrams the way the steering
/// relies on (BSDs deliver unicast to one socket): bind alone.
#[cfg(not(target_os = "linux"))]
fn bind_shared(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    std::net::UdpSocket::bind(addr)
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; sparc has its own).
#[cfg(all(target_os = "linux", not(target_arch = "sparc64")))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
#[cfg(all(target_os = "linux", target_arch = "sparc64"))]
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 0x35;

/// Attaches [`program`] to the reuseport group of `sock` (bound): it replaces
/// the group's program, for every socket in the group.
#[cfg(target_os = "linux")]
pub fn steer(sock: &std::net::UdpSocket, tag: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut filters: Vec<libc::sock_filter> = program(tag)
        .into_iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filters.len() as libc::c_ushort,
        filter: filters.as_mut_ptr(),
    };
    // SAFETY: setsockopt(2) with a sock_fprog pointing at `filters`, alive
    // for the call (the kernel copies the program).
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How many sockets are bound to exactly `addr` (UDP), from
/// `/proc/net/udp[6]`; `None` where that cannot be read.
pub fn holders(addr: SocketAddr) -> Option<usize> {
    let file = if addr.is_ipv4() {
        "/proc/net/udp"
    } else {
        "/proc/net/udp6"
    };
    let table = std::fs::read_to_string(file).ok()?;
    Some(count_bound(&table, addr))
}

/// Counts the lines of a `/proc/net/udp[6]` table whose local address is
/// `addr` (addresses are printed as native-endian 32-bit words in hex).
fn count_bound(table: &str, addr: SocketAddr) -> usize {
    let want: Vec<u8> = match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
        std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter_map(|local| {
            let (ip, port) = local.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let mut bytes = Vec::with_capacity(16);
            for word in ip.as_bytes().chunks(8) {
                let word = std::str::from_utf8(word).ok()?;
                bytes.extend_from_slice(&u32::from_str_radix(word, 16).ok()?.to_ne_bytes());
            }
            Some((bytes, port))
        })
        .filter(|(ip, port)| *port == addr.port() && *ip == want)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a classic BPF program the way the kernel's socket-filter
    /// interpreter does for the instructions [`program`] uses.
    fn run(prog: &[Insn], data: &[u8]) -> u32 {
        let (mut a, mut pc) = (0u32, 0usize);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_B_ABS => match data.get(i.k as usize) {
                    Some(b) => a = u32::from(*b),
                    None => return 0,
                },
                LD_W_ABS => match data.get(i.k as usize..i.k as usize + 4) {
                    Some(w) => a = u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                    None => return 0,
                },
                ALU_AND_K => a &= i.k,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                RET_K => return i.k,
                c => panic!("opcode {c:#x} not modelled"),
            }
        }
    }

    fn long(ty: u8, dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0xc0 | (ty << 4), 0, 0, 0, 1, dcid.len() as u8];
        p.extend_from_slice(dcid);
        p.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0]);
        p.resize(1200, 0);
        p
    }

    fn short(dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x40];
        p.extend_from_slice(dcid);
        p.extend_from_slice(&[0; 40]);
        p
    }

    const TAG: u32 = 0xdead_beef;
    const OURS: [u8; 8] = [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4];
    const THEIRS: [u8; 8] = [0x12, 0x34, 0x56, 0x78, 1, 2, 3, 4];

    #[test]
    fn new_connections_go_to_the_newest_socket() {
        let p = program(TAG);
        // Initial with a client-chosen DCID of any length, and 0-RTT.
        assert_eq!(run(&p, &long(0, &[9; 20])), NEWEST);
        assert_eq!(run(&p, &long(0, &THEIRS)), NEWEST);
        assert_eq!(run(&p, &long(1, &[9; 16])), NEWEST);
    }

    #[test]
    fn established_connections_go_to_their_process() {
        let p = program(TAG);
        assert_eq!(run(&p, &long(2, &OURS)), NEWEST);
        assert_eq!(run(&p, &long(2, &THEIRS)), OLDEST);
        assert_eq!(run(&p, &long(2, &[0xde, 0xad, 0xbe, 0xef])), OLDEST);
        assert_eq!(run(&p, &short(&OURS)), NEWEST);
        assert_eq!(run(&p, &short(&THEIRS)), OLDEST);
        // Without the QUIC bit (greased), the header form alone decides.
        let mut greased = short(&OURS);
        greased[0] = 0x01;
        assert_eq!(run(&p, &greased), NEWEST);
    }

    #[test]
    fn runts_go_to_the_old_process() {
        let p = program(TAG);
        assert_eq!(run(&p, &[]), OLDEST);
        assert_eq!(run(&p, &[0x40, 0xde]), OLDEST);
        assert_eq!(run(&p, &[0xe0, 0, 0, 0, 1, 8, 0xde]), OLDEST);
    }

    #[test]
    fn cids_carry_and_are_checked_against_the_tag() {
        let mut ours = TaggedCids::new(TAG);
        let theirs = TaggedCids::new(0x1234_5678);
        let a = ours.generate_cid();
        let b = ours.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[..4], TAG.to_be_bytes());
        assert_ne!(a, b, "the rest is random");
        assert!(ours.validate(&a).is_ok());
        assert!(theirs.validate(&a).is_err());
        assert!(ours.validate(&ConnectionId::new(&a[..4])).is_err());
    }

    #[test]
    fn proc_net_udp_lines_are_matched_by_local_address() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
                  2: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 0\n\
                  3: 00000000:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(count_bound(v4, "127.0.0.1:8080".parse().unwrap()), 2);
            assert_eq!(count_bound(v4, "0.0.0.0:8080".parse().unwrap()), 1);
            assert_eq!(count_bound(v4, "127.0.0.1:8081".parse().unwrap()), 0);
            let v6 = "sl local\n 1: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 07\n";
            assert_eq!(count_bound(v6, "[::1]:443".parse().unwrap()), 1);
        }
    }

    /// The kernel itself: two sockets in one group, the newest attaches the
    /// program; then the old one closes and the new one gets everything.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_kernel_steers_by_the_program() {
        let old = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = old.local_addr().unwrap();
        let new = bind_shared(addr).unwrap();
        new.set_nonblocking(true).unwrap();
        steer(&new, TAG).unwrap();
        assert_eq!(holders(addr), Some(2));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = |sock: &std::net::UdpSocket| {
            let mut buf = [0u8; 2048];
            let end = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) => return Some(buf[..n].to_vec()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if std::time::Instant::now() > end {
                            return None;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("recv: {e}"),
                }
            }
        };
        for (packet, to_new) in [
            (long(0, &[7; 20]), true),
            (short(&OURS), true),
            (short(&THEIRS), false),
            (long(2, &OURS), true),
            (long(2, &THEIRS), false),
        ] {
            client.send_to(&packet, addr).unwrap();
            let (hit, miss) = if to_new { (&new, &old) } else { (&old, &new) };
            assert_eq!(got(hit).as_deref(), Some(&packet[..]));
            let mut buf = [0u8; 8];
            assert!(miss.recv(&mut buf).is_err(), "delivered twice?");
        }
        drop(old);
        assert_eq!(holders(addr), Some(1));
        for packet in [short(&THEIRS), short(&OURS), long(0, &[7; 20])] {
            client.send_to(&packet, addr).unwrap();
            assert_eq!(got(&new).as_deref(), Some(&packet[..]));
        }
    }
}
