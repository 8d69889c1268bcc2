//! LiveView-aware telemetry for websocket tunnels: counting channel joins and
//! LiveView sockets per node, and spotting LiveView reconnects.
//!
//! bext forwards each Phoenix socket (`/live/websocket`, `/socket/websocket`)
//! as an upgraded HTTP/1.1 tunnel and never terminates the WebSocket protocol
//! itself. To still know what runs in a tunnel, [`JoinPeeker`] looks at a
//! borrowed view of each client → server chunk *as it is being forwarded*:
//! it parses RFC 6455 frame headers, unmasks text payload bytes into a small
//! fixed buffer and recognizes Phoenix `phx_join` messages (serializer V2
//! arrays and V1 objects). It never delays a byte: `feed` takes `&[u8]`,
//! keeps no reference to it, never asks for "more data before you may
//! forward", runs in time linear in the chunk (and bounded by a byte budget
//! for the whole tunnel), and once [`JoinPeeker::done`] is true the caller
//! skips it altogether. Whatever the bytes are — garbage, compressed frames,
//! a protocol we do not know — the worst outcome is a join not counted.
//!
//! Joins happen right after the socket opens (a LiveView page joins its root
//! and nested live views within the first few messages), so a budget of the
//! first 16 KiB / 8 text frames sees them and costs nothing afterwards.
//!
//! [`ReconnectTracker`] remembers recent tunnel closes per client in a
//! fixed, lock-free table, so that a LiveView join arriving shortly after
//! the same client's tunnel closed can be counted as a reconnect (a node
//! going away, a flapping network) rather than a fresh visitor.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What the peeker saw so far.
///
/// `joins` counts every `phx_join`; `liveview_joins` counts those whose topic
/// starts with `lv:` (a subset of `joins`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Joins {
    pub joins: u32,
    pub liveview_joins: u32,
}

/// Longest frame header: 2 bytes + 8-byte extended length + 4-byte mask key.
const MAX_HEADER: usize = 14;
/// Bytes of each text message kept for classification. Phoenix puts the
/// join ref, ref, topic and event before the (large) payload, so this is
/// plenty for a real join while keeping the peeker's memory fixed.
const MSG_CAP: usize = 256;

/// The data message the current frames belong to (fragmentation state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    None,
    Text,
    Binary,
}

/// What the payload of the current frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Opcode 1, or a continuation of a text message.
    Text,
    /// Opcode 2, or a continuation of a binary message (Phoenix binary V2):
    /// skipped, but its bytes count toward the budget.
    Binary,
    /// Ping or pong: skipped.
    Control,
}

/// The frame whose payload is being read.
#[derive(Debug, Clone, Copy)]
struct Frame {
    kind: Kind,
    fin: bool,
    /// Payload bytes not yet seen.
    left: u64,
    /// All zero for an unmasked frame, so unmasking is a no-op.
    mask: [u8; 4],
    /// Index into `mask` of the next payload byte.
    mask_pos: usize,
}

/// Why peeking stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Budget or frame limit reached, or a close frame: the bytes seen so far
    /// were well-formed, so a message prefix already held still counts when
    /// its topic and event are complete.
    Exhausted,
    /// Not a WebSocket stream we understand: nothing more is trusted.
    Invalid,
}

/// A streaming peeker at the client → server bytes of one websocket tunnel.
///
/// Its state is fixed-size (a 14-byte header accumulator and a 256-byte
/// message prefix), whatever the input.
pub struct JoinPeeker {
    budget_left: usize,
    frames_left: u32,
    done: bool,
    total: Joins,
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// `Some` while inside a frame's payload, `None` while reading a header.
    frame: Option<Frame>,
    message: Message,
    /// The current text message is still being copied into `msg` (it has not
    /// been classified yet and is not compressed).
    collecting: bool,
    msg: [u8; MSG_CAP],
    msg_len: usize,
}

impl fmt::Debug for JoinPeeker {
    // The buffers are noise in logs; the progress is what matters.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinPeeker")
            .field("budget_left", &self.budget_left)
            .field("frames_left", &self.frames_left)
            .field("done", &self.done)
            .field("total", &self.total)
            .finish_non_exhaustive()
    }
}

impl JoinPeeker {
    /// `budget`: total tunnel bytes it will look at (bext uses 16 KiB);
    /// `max_frames`: text frames it will look at (bext uses 8).
    pub fn new(budget: usize, max_frames: u32) -> JoinPeeker {
        JoinPeeker {
            budget_left: budget,
            frames_left: max_frames,
            done: budget == 0 || max_frames == 0,
            total: Joins::default(),
            header: [0; MAX_HEADER],
            header_len: 0,
            frame: None,
            message: Message::None,
            collecting: false,
            msg: [0; MSG_CAP],
            msg_len: 0,
        }
    }

    /// Feeds the next chunk (a copy-free view of what is being forwarded).
    /// Returns the joins found *in this chunk* (delta). The first chunk must
    /// be the first byte after the upgrade handshake.
    pub fn feed(&mut self, chunk: &[u8]) -> Joins {
        if self.done {
            return Joins::default();
        }
        let before = self.total;
        let take = chunk.len().min(self.budget_left);
        self.budget_left -= take;
        let mut input = chunk.get(..take).unwrap_or_default();
        while !input.is_empty() && !self.done {
            input = match self.frame {
                None => self.read_header(input),
                Some(frame) => self.read_payload(frame, input),
            };
        }
        if self.budget_left == 0 && !self.done {
            self.stop(Stop::Exhausted);
        }
        Joins {
            joins: self.total.joins - before.joins,
            liveview_joins: self.total.liveview_joins - before.liveview_joins,
        }
    }

    /// True once the budget or frame limit is exhausted, a close frame was
    /// seen, or the stream is not parseable: callers can stop calling feed.
    pub fn done(&self) -> bool {
        self.done
    }

    /// Joins found since the tunnel opened.
    pub fn total(&self) -> Joins {
        self.total
    }

    /// Accumulates header bytes; starts the frame once the header is whole.
    /// Returns the unread rest of `input`.
    fn read_header<'a>(&mut self, input: &'a [u8]) -> &'a [u8] {
        let mut used = 0;
        for &byte in input {
            let Some(slot) = self.header.get_mut(self.header_len) else {
                // Unreachable: a header never needs more than MAX_HEADER bytes.
                self.stop(Stop::Invalid);
                return &[];
            };
            *slot = byte;
            self.header_len += 1;
            used += 1;
            if self.header_len >= header_need(&self.header[..self.header_len]) {
                self.start_frame();
                break;
            }
        }
        input.get(used..).unwrap_or_default()
    }

    /// Interprets the complete header in `self.header`.
    fn start_frame(&mut self) {
        let h = self.header;
        self.header_len = 0;
        let (b0, b1) = (h[0], h[1]);
        let (left, mask_at) = match b1 & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        if left >> 63 != 0 {
            // RFC 6455 §5.2: the most significant bit must be 0.
            return self.stop(Stop::Invalid);
        }
        let mask = if b1 & 0x80 != 0 {
            [h[mask_at], h[mask_at + 1], h[mask_at + 2], h[mask_at + 3]]
        } else {
            // Clients must mask, but an unmasked frame is still readable.
            [0; 4]
        };
        let fin = b0 & 0x80 != 0;
        let kind = match (b0 & 0x0f, self.message) {
            (0x0, Message::Text) => Kind::Text,
            (0x0, Message::Binary) => Kind::Binary,
            (0x1, Message::None) => {
                self.message = Message::Text;
                // RSV1 marks a permessage-deflate message: its bytes are not
                // JSON, so it is skipped rather than misread.
                self.collecting = b0 & 0x40 == 0;
                self.msg_len = 0;
                Kind::Text
            }
            (0x2, Message::None) => {
                self.message = Message::Binary;
                Kind::Binary
            }
            // The client is going away: nothing more to learn.
            (0x8, _) => return self.stop(Stop::Exhausted),
            (0x9 | 0xA, _) if fin && left <= 125 => Kind::Control,
            // A continuation with no message, a new message inside a
            // fragmented one, a reserved opcode or a malformed control frame.
            _ => return self.stop(Stop::Invalid),
        };
        let frame = Frame {
            kind,
            fin,
            left,
            mask,
            mask_pos: 0,
        };
        if left == 0 {
            self.end_frame(frame);
        } else {
            self.frame = Some(frame);
        }
    }

    /// Consumes payload bytes of `frame` from `input`; returns the rest.
    fn read_payload<'a>(&mut self, mut frame: Frame, input: &'a [u8]) -> &'a [u8] {
        let n = usize::try_from(frame.left).map_or(input.len(), |left| left.min(input.len()));
        let (data, rest) = input.split_at(n);
        if frame.kind == Kind::Text && self.collecting {
            self.collect(data, frame.mask, frame.mask_pos);
        }
        // Bytes past the message buffer are skipped without touching them;
        // only the mask phase has to follow along.
        frame.mask_pos = (frame.mask_pos + n % 4) % 4;
        frame.left -= n as u64;
        if frame.left == 0 {
            self.frame = None;
            self.end_frame(frame);
        } else {
            self.frame = Some(frame);
        }
        rest
    }

    /// Unmasks into the message buffer what still fits; classifies once full
    /// (the topic and event are at the front, the rest is payload).
    fn collect(&mut self, data: &[u8], mask: [u8; 4], mask_pos: usize) {
        let free = self.msg.get_mut(self.msg_len..).unwrap_or_default();
        let mut copied = 0;
        for (dst, &src) in free.iter_mut().zip(data) {
            *dst = src ^ mask[(mask_pos + copied) % 4];
            copied += 1;
        }
        self.msg_len += copied;
        if self.msg_len >= MSG_CAP {
            self.finish_message();
        }
    }

    fn end_frame(&mut self, frame: Frame) {
        match frame.kind {
            Kind::Control => {}
            Kind::Binary => {
                if frame.fin {
                    self.message = Message::None;
                }
            }
            Kind::Text => {
                if frame.fin {
                    self.message = Message::None;
                    self.finish_message();
                }
                self.frames_left = self.frames_left.saturating_sub(1);
                if self.frames_left == 0 {
                    self.stop(Stop::Exhausted);
                }
            }
        }
    }

    /// Classifies the held message (or prefix) once, and counts a join.
    fn finish_message(&mut self) {
        if !self.collecting {
            return;
        }
        self.collecting = false;
        let held = self.msg.get(..self.msg_len).unwrap_or_default();
        if let Some(liveview) = classify(held) {
            self.total.joins = self.total.joins.saturating_add(1);
            if liveview {
                self.total.liveview_joins = self.total.liveview_joins.saturating_add(1);
            }
        }
    }

    fn stop(&mut self, why: Stop) {
        if why == Stop::Exhausted {
            // A prefix counts only if its topic and event were complete
            // (`classify` never guesses past the end of what it has).
            self.finish_message();
        }
        self.collecting = false;
        self.frame = None;
        self.done = true;
    }
}

/// Header bytes needed, given the first bytes of a header.
fn header_need(h: &[u8]) -> usize {
    let Some(&b1) = h.get(1) else {
        return 2;
    };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// `Some(liveview)` when `msg` (a whole Phoenix text message, or its first
/// bytes) is a `phx_join`; `liveview` when its topic starts with `lv:`.
/// `None` for anything else, including a prefix that ends before the topic
/// and event are complete, so a truncated message is never guessed at.
fn classify(msg: &[u8]) -> Option<bool> {
    let mut c = Cursor { s: msg, i: 0 };
    c.ws();
    match c.peek()? {
        b'[' => classify_v2(&mut c),
        b'{' => classify_v1(&mut c),
        _ => None,
    }
}

/// Serializer V2: `[join_ref, ref, topic, event, payload]`.
fn classify_v2(c: &mut Cursor<'_>) -> Option<bool> {
    c.expect(b'[')?;
    // join_ref and ref: strings or null (any value is skipped correctly).
    c.skip_value()?;
    c.expect(b',')?;
    c.skip_value()?;
    c.expect(b',')?;
    let topic = c.string()?;
    c.expect(b',')?;
    let event = c.string()?;
    // The payload must follow: a four-element array is not a message.
    c.expect(b',')?;
    verdict(&topic, &event)
}

/// Serializer V1: `{"topic": .., "event": .., "payload": .., "ref": ..}` in
/// any key order; keys of nested objects are skipped with their values.
fn classify_v1(c: &mut Cursor<'_>) -> Option<bool> {
    c.expect(b'{')?;
    let mut topic = None;
    let mut event = None;
    loop {
        let key = c.string()?;
        c.expect(b':')?;
        c.ws();
        let is_string = c.peek()? == b'"';
        if is_string && topic.is_none() && key.is(b"topic") {
            topic = Some(c.string()?);
        } else if is_string && event.is_none() && key.is(b"event") {
            event = Some(c.string()?);
        } else {
            c.skip_value()?;
        }
        if let (Some(topic), Some(event)) = (&topic, &event) {
            return verdict(topic, event);
        }
        c.expect(b',')?;
    }
}

fn verdict(topic: &Head, event: &Head) -> Option<bool> {
    event.is(b"phx_join").then(|| topic.starts_with(b"lv:"))
}

/// Stand-in for a decoded non-ASCII code unit: it never equals a byte of the
/// ASCII names compared against.
const NON_ASCII: u8 = 0xff;
/// Decoded bytes of a string kept for comparison (longer than any name
/// compared against, so length tells "phx_join" from "phx_joined").
const HEAD: usize = 16;

/// The first decoded bytes of a JSON string and its full decoded length.
#[derive(Debug, Default)]
struct Head {
    bytes: [u8; HEAD],
    len: usize,
}

impl Head {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
        }
        self.len = self.len.saturating_add(1);
    }

    fn is(&self, s: &[u8]) -> bool {
        self.len == s.len() && self.bytes.get(..s.len()) == Some(s)
    }

    fn starts_with(&self, p: &[u8]) -> bool {
        self.len >= p.len() && self.bytes.get(..p.len()) == Some(p)
    }
}

/// A forward-only JSON tokenizer over a byte slice; every method returns
/// `None` at the end of the data or on something that is not JSON.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        self.ws();
        (self.bump()? == want).then_some(())
    }

    /// A JSON string, decoding escapes so that `\"` does not end it and
    /// `\u005f` compares as `_`.
    fn string(&mut self) -> Option<Head> {
        self.expect(b'"')?;
        let mut head = Head::default();
        loop {
            match self.bump()? {
                b'"' => return Some(head),
                b'\\' => {
                    let unit = match self.bump()? {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            let mut code = 0u32;
                            for _ in 0..4 {
                                code = code * 16 + char::from(self.bump()?).to_digit(16)?;
                            }
                            u8::try_from(code)
                                .ok()
                                .filter(u8::is_ascii)
                                .unwrap_or(NON_ASCII)
                        }
                        _ => return None,
                    };
                    head.push(unit);
                }
                // Raw control characters are not allowed inside a string.
                0x00..=0x1f => return None,
                b => head.push(b),
            }
        }
    }

    /// Skips one JSON value of any kind. Nested containers are skipped by
    /// depth, with strings inside them read properly so that brackets or
    /// quotes within string values do not confuse the depth.
    fn skip_value(&mut self) -> Option<()> {
        self.ws();
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                // A number or a literal (null, true, false).
                let start = self.i;
                while matches!(
                    self.peek(),
                    Some(b'a'..=b'z' | b'0'..=b'9' | b'+' | b'-' | b'.' | b'E')
                ) {
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

/// Bits of a slot holding the close time (ms, wrapping after ~34 years).
const TIME_BITS: u32 = 40;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
/// Slots probed per client: a bucket, so that a few clients hashing to the
/// same place do not evict each other.
const BUCKET: usize = 4;
/// Largest table; also keeps the bucket index bits clear of the tag bits.
const MAX_SLOTS: usize = 1 << 24;

/// Recent tunnel closes per client, in a fixed lock-free table.
///
/// Each slot is one `AtomicU64`: a 24-bit tag from the client's hash in the
/// high bits, the close time (ms, 40 bits) in the low bits, 0 when empty.
/// A client maps to a bucket of [`BUCKET`] slots by other bits of the same
/// hash. Memory is `slots × 8` bytes however many clients there are.
///
/// It is telemetry, not a security decision, and it may err in two rare ways:
/// two clients in the same bucket with the same tag (about 1 in 16 million
/// for a pair sharing a bucket) are taken for one, so one's join may consume
/// the other's close; and when more than [`BUCKET`] clients of one bucket
/// close within the window, the oldest close is forgotten. The hash is keyed
/// per process (SipHash with a random key), so clients cannot aim at each
/// other's slots.
pub struct ReconnectTracker {
    slots: Box<[AtomicU64]>,
    /// Buckets − 1 (a power of two minus one).
    bucket_mask: u64,
    window_ms: u64,
    hasher: RandomState,
}

impl fmt::Debug for ReconnectTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectTracker")
            .field("slots", &self.slots.len())
            .field("window_ms", &self.window_ms)
            .finish_non_exhaustive()
    }
}

impl ReconnectTracker {
    /// `slots` is rounded up to a power of two of at least one bucket (bext:
    /// 4096 slots, a 10 s window).
    pub fn new(slots: usize, window: Duration) -> ReconnectTracker {
        let slots = slots.clamp(BUCKET, MAX_SLOTS).next_power_of_two();
        // Ages are compared modulo 2^40 ms and the upper half of that range
        // reads as "in the future", so the window is capped below it.
        let window_ms = u64::try_from(window.as_millis())
            .unwrap_or(u64::MAX)
            .min(TIME_MASK / 2);
        ReconnectTracker {
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            bucket_mask: (slots / BUCKET) as u64 - 1,
            window_ms,
            hasher: RandomState::new(),
        }
    }

    /// A tunnel of `client` (a u128 client key — bext passes the IP as u128)
    /// closed at `now_ms` (monotonic ms from the caller).
    pub fn closed(&self, client: u128, now_ms: u64) {
        let (bucket, tag) = self.locate(client);
        let entry = (tag << TIME_BITS) | (now_ms & TIME_MASK);
        // A racing writer in the same bucket can make the compare-exchange
        // fail; retry a few times, then drop the close (telemetry).
        for _ in 0..BUCKET {
            let Some((slot, seen)) = self.victim(bucket, tag, now_ms) else {
                return;
            };
            // Relaxed: each slot is a self-contained value, nothing else is
            // published through it.
            if slot
                .compare_exchange(seen, entry, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// A new LiveView join from `client` at `now_ms`: true when its previous
    /// tunnel closed within the window. The entry is consumed (by a
    /// compare-exchange, so also under concurrency) so one close yields at
    /// most one reconnect.
    pub fn is_reconnect(&self, client: u128, now_ms: u64) -> bool {
        let (bucket, tag) = self.locate(client);
        for slot in bucket {
            let seen = slot.load(Ordering::Relaxed);
            if seen != 0
                && seen >> TIME_BITS == tag
                && self.age(seen, now_ms) <= self.window_ms
                && slot
                    .compare_exchange(seen, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return true;
            }
        }
        false
    }

    /// The client's bucket and its tag (never 0, so a used slot is never 0).
    fn locate(&self, client: u128) -> (&[AtomicU64], u64) {
        let h = self.hasher.hash_one(client);
        // The index uses at most the low 22 bits, the tag the high 24.
        let start = ((h & self.bucket_mask) as usize) * BUCKET;
        let tag = (h >> TIME_BITS).max(1);
        let bucket = self.slots.get(start..start + BUCKET).unwrap_or_default();
        (bucket, tag)
    }

    /// The slot a close of `tag` should take: its own previous entry, else an
    /// empty or expired one, else the oldest. Returns it with the value seen
    /// (`None` only for an empty bucket, which `new` never makes).
    fn victim<'a>(
        &self,
        bucket: &'a [AtomicU64],
        tag: u64,
        now_ms: u64,
    ) -> Option<(&'a AtomicU64, u64)> {
        let mut best: Option<(&AtomicU64, u64, u64)> = None; // slot, value, age
        for slot in bucket {
            let seen = slot.load(Ordering::Relaxed);
            if seen != 0 && seen >> TIME_BITS == tag {
                return Some((slot, seen));
            }
            let age = if seen == 0 {
                u64::MAX
            } else {
                let age = self.age(seen, now_ms);
                if age > self.window_ms {
                    u64::MAX
                } else {
                    age
                }
            };
            if best.is_none_or(|(_, _, best_age)| age > best_age) {
                best = Some((slot, seen, age));
            }
        }
        best.map(|(slot, seen, _)| (slot, seen))
    }

    /// Ms since the close recorded in `entry`, modulo 2^40. A close stamped
    /// slightly after `now_ms` (callers' clocks read on different threads)
    /// counts as age 0.
    fn age(&self, entry: u64, now_ms: u64) -> u64 {
        let age = (now_ms.wrapping_sub(entry)) & TIME_MASK;
        if age > TIME_MASK / 2 {
            0
        } else {
            age
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [1, 2, 3, 4];
    const BUDGET: usize = 16 * 1024;

    /// A client frame: FIN flag, opcode, payload, masked with `mask` if any.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend((n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend((n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(k) => {
                out.extend(k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
            None => out.extend(payload),
        }
        out
    }

    fn text(msg: &str) -> Vec<u8> {
        frame(true, 1, msg.as_bytes(), Some(KEY))
    }

    fn join(topic: &str, reference: u32) -> String {
        format!(
            r#"["{reference}","{reference}","{topic}","phx_join",{{"url":"http://localhost:4000/","params":{{"_csrf_token":"abc","_mounts":0}},"session":"SFMyNTY.g2gDaAJhBXQAAAAD","static":"SFMyNTY.xyz"}}]"#
        )
    }

    fn peek(bytes: &[u8]) -> JoinPeeker {
        let mut p = JoinPeeker::new(BUDGET, 8);
        p.feed(bytes);
        p
    }

    fn j(joins: u32, liveview_joins: u32) -> Joins {
        Joins {
            joins,
            liveview_joins,
        }
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled), checking that the
    /// deltas add up to the total.
    fn feed_chunks(p: &mut JoinPeeker, bytes: &[u8], sizes: &[usize]) -> Joins {
        let mut sum = Joins::default();
        let mut rest = bytes;
        let mut k = 0;
        while !rest.is_empty() {
            let n = sizes[k % sizes.len()].clamp(1, rest.len());
            k += 1;
            let (chunk, tail) = rest.split_at(n);
            let d = p.feed(chunk);
            sum.joins += d.joins;
            sum.liveview_joins += d.liveview_joins;
            rest = tail;
        }
        assert_eq!(sum, p.total());
        sum
    }

    #[test]
    fn single_masked_v2_join() {
        let bytes = text(&join("lv:phx-F8Gx", 4));
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(p.feed(&bytes), j(1, 1));
        assert_eq!(p.total(), j(1, 1));
        assert!(!p.done());
    }

    #[test]
    fn split_at_every_offset_and_byte_by_byte() {
        let bytes = text(&join("lv:phx-F8Gx", 4));
        for at in 0..=bytes.len() {
            let mut p = JoinPeeker::new(BUDGET, 8);
            let a = p.feed(&bytes[..at]);
            let b = p.feed(&bytes[at..]);
            assert_eq!(p.total(), j(1, 1), "split at {at}");
            assert_eq!(a.joins + b.joins, 1);
        }
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[1]), j(1, 1));
    }

    #[test]
    fn v1_join() {
        let msg = r#"{"topic":"lv:phx-abc","event":"phx_join","payload":{},"ref":"1"}"#;
        assert_eq!(peek(&text(msg)).total(), j(1, 1));
        // Key order does not matter, nested "event" keys are not top level.
        let msg = r#"{"payload":{"event":"phx_join","topic":"lv:x"},"ref":"1","event":"phx_leave","topic":"lv:x"}"#;
        assert_eq!(peek(&text(msg)).total(), j(0, 0));
        let msg =
            r#"{ "ref" : null , "event" : "phx_join" , "topic" : "room:1" , "payload" : {} }"#;
        assert_eq!(peek(&text(msg)).total(), j(1, 0));
    }

    #[test]
    fn heartbeat_and_events_are_not_joins() {
        let mut bytes = text(r#"[null,"5","phoenix","heartbeat",{}]"#);
        bytes.extend(text(
            r#"["4","6","lv:phx-F8Gx","event",{"type":"click","event":"inc","value":{}}]"#,
        ));
        bytes.extend(text(r#"["4","7","lv:phx-F8Gx","phx_leave",{}]"#));
        bytes.extend(text(r#"["4","8","lv:phx-F8Gx","phx_joined",{}]"#));
        assert_eq!(peek(&bytes).total(), j(0, 0));
    }

    #[test]
    fn liveview_topic_vs_plain_channel() {
        let mut bytes = text(&join("room:lobby", 1));
        assert_eq!(peek(&bytes).total(), j(1, 0));
        bytes.extend(text(&join("lv:phx-1", 2)));
        assert_eq!(peek(&bytes).total(), j(2, 1));
        // "lv" without the colon, or "lv:" later in the topic, is not LiveView.
        assert_eq!(peek(&text(&join("lvx:1", 3))).total(), j(1, 0));
        assert_eq!(peek(&text(&join("room:lv:1", 3))).total(), j(1, 0));
    }

    #[test]
    fn several_joins_of_nested_live_views() {
        let mut bytes = Vec::new();
        for (i, topic) in ["lv:phx-root", "lv:phx-child1", "lv:phx-child2"]
            .iter()
            .enumerate()
        {
            bytes.extend(text(&join(topic, i as u32 + 1)));
        }
        assert_eq!(peek(&bytes).total(), j(3, 3));
        for size in [1, 2, 3, 7, 13, 64, 255] {
            let mut p = JoinPeeker::new(BUDGET, 8);
            assert_eq!(
                feed_chunks(&mut p, &bytes, &[size]),
                j(3, 3),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn fragmented_text_message() {
        let msg = join("lv:phx-frag", 9);
        let b = msg.as_bytes();
        let mut bytes = frame(false, 1, &b[..5], Some(KEY));
        // A control frame may sit between fragments.
        bytes.extend(frame(true, 9, b"ping", Some([9, 8, 7, 6])));
        bytes.extend(frame(false, 0, &b[5..30], Some([5, 6, 7, 8])));
        bytes.extend(frame(false, 0, &[], Some(KEY)));
        bytes.extend(frame(true, 0, &b[30..], Some([0xaa, 0xbb, 0xcc, 0xdd])));
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[1]), j(1, 1));
        assert!(!p.done());
        // The message ended: a further join is read as a new message.
        bytes.extend(text(&join("room:a", 10)));
        assert_eq!(peek(&bytes).total(), j(2, 1));
    }

    #[test]
    fn sixteen_bit_length_frame() {
        let mut msg = join("lv:phx-big", 1);
        msg.insert_str(msg.len() - 2, &format!(r#","pad":"{}""#, "x".repeat(1000)));
        let bytes = text(&msg);
        assert_eq!(bytes[1] & 0x7f, 126);
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[3, 1, 100]), j(1, 1));
        assert!(!p.done());
    }

    #[test]
    fn sixty_four_bit_length_frame_consumes_the_budget() {
        // A huge join: its head is in the first bytes, so it still counts.
        let mut msg = join("lv:phx-huge", 1);
        msg.insert_str(
            msg.len() - 2,
            &format!(r#","pad":"{}""#, "x".repeat(70_000)),
        );
        let mut bytes = text(&msg);
        assert_eq!(bytes[1] & 0x7f, 127);
        bytes.extend(text(&join("lv:phx-late", 2)));
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[4096]), j(1, 1));
        assert!(p.done());

        // A big binary first frame: nothing counted, done after the budget.
        let mut bytes = frame(true, 2, &vec![7u8; 70_000], Some(KEY));
        bytes.extend(text(&join("lv:phx-late", 2)));
        let mut p = JoinPeeker::new(BUDGET, 8);
        p.feed(&bytes[..BUDGET - 1]);
        assert!(!p.done());
        p.feed(&bytes[BUDGET - 1..BUDGET]);
        assert!(p.done());
        assert_eq!(p.feed(&bytes[BUDGET..]), j(0, 0));
    }

    #[test]
    fn binary_frames_are_skipped() {
        let mut bytes = frame(
            false,
            2,
            b"[\"1\",\"1\",\"lv:x\",\"phx_join\",{}]",
            Some(KEY),
        );
        bytes.extend(frame(true, 0, b"more", Some(KEY)));
        bytes.extend(text(&join("lv:phx-1", 1)));
        assert_eq!(peek(&bytes).total(), j(1, 1));
    }

    #[test]
    fn ping_pong_interleaved() {
        let mut bytes = frame(true, 9, b"", Some(KEY));
        bytes.extend(text(&join("lv:phx-1", 1)));
        bytes.extend(frame(true, 10, b"pong!", Some(KEY)));
        bytes.extend(frame(true, 9, &[0u8; 125], Some(KEY)));
        bytes.extend(text(&join("room:x", 2)));
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[5, 1, 17]), j(2, 1));
        assert!(!p.done());
    }

    #[test]
    fn close_frame_ends_peeking() {
        let mut bytes = text(&join("lv:phx-1", 1));
        bytes.extend(frame(true, 8, &[0x03, 0xe8], Some(KEY)));
        let at = bytes.len();
        bytes.extend(text(&join("lv:phx-2", 2)));
        let mut p = JoinPeeker::new(BUDGET, 8);
        assert_eq!(p.feed(&bytes[..at]), j(1, 1));
        assert!(p.done());
        assert_eq!(p.feed(&bytes[at..]), j(0, 0));
        assert_eq!(p.total(), j(1, 1));
    }

    #[test]
    fn budget_exhausted() {
        let first = text(&join("lv:phx-1", 1));
        let mut bytes = first.clone();
        bytes.extend(text(&join("lv:phx-2", 2)));
        let mut p = JoinPeeker::new(first.len(), 8);
        assert_eq!(feed_chunks(&mut p, &bytes, &[10]), j(1, 1));
        assert!(p.done());
        assert_eq!(p.feed(&text(&join("lv:phx-3", 3))), j(0, 0));

        // A budget ending inside a message: its prefix counts when the topic
        // and event are complete, not when it stops inside the event.
        let msg = join("lv:phx-cut", 1);
        let bytes = text(&msg);
        let header = bytes.len() - msg.len();
        let after_event = msg.find("phx_join").unwrap() + "phx_join\",".len();
        let mut p = JoinPeeker::new(header + after_event, 8);
        assert_eq!(p.feed(&bytes), j(1, 1));
        assert!(p.done());
        let mut p = JoinPeeker::new(header + after_event - 3, 8);
        assert_eq!(p.feed(&bytes), j(0, 0));
        assert!(p.done());
    }

    #[test]
    fn frame_limit() {
        let mut bytes = Vec::new();
        for i in 0..3 {
            bytes.extend(text(&join("lv:phx", i)));
        }
        let mut p = JoinPeeker::new(BUDGET, 2);
        assert_eq!(p.feed(&bytes), j(2, 2));
        assert!(p.done());
        assert!(JoinPeeker::new(BUDGET, 0).done());
        assert!(JoinPeeker::new(0, 8).done());
    }

    #[test]
    fn phx_join_inside_payload_is_not_a_join() {
        let msgs = [
            r#"["1","2","room:lobby","new_msg",{"body":"phx_join"}]"#,
            r#"["1","2","room:lobby","new_msg",{"body":"\"phx_join\""}]"#,
            r#"["1","2","room:lobby","new_msg","phx_join"]"#,
            r#"[null,null,"x\",\"phx_join","phx_leave",{}]"#,
            r#"[["a","phx_join"],"2","room","new_msg",{}]"#,
            r#"{"topic":"room","event":"new_msg","payload":{"event":"phx_join"}}"#,
            r#"{"topic":"room","payload":"\"event\":\"phx_join\"","event":"x"}"#,
        ];
        for msg in msgs {
            assert_eq!(peek(&text(msg)).total(), j(0, 0), "{msg}");
        }
    }

    #[test]
    fn escaped_quotes_in_topic() {
        assert_eq!(
            peek(&text(r#"["1","1","room:a\"b","phx_join",{}]"#)).total(),
            j(1, 0)
        );
        assert_eq!(
            peek(&text(r#"["1","1","lv:\\","phx_join",{}]"#)).total(),
            j(1, 1)
        );
        assert_eq!(
            peek(&text(r#"["1","1","lv:\"],","phx_join",{}]"#)).total(),
            j(1, 1)
        );
        // Escapes decode before comparing.
        assert_eq!(
            peek(&text(r#"["1","1","\u006cv:x","phx\u005fjoin",{}]"#)).total(),
            j(1, 1)
        );
        assert_eq!(
            peek(&text(r#"["1","1","lv:x","phx_join\u00e9",{}]"#)).total(),
            j(0, 0)
        );
    }

    #[test]
    fn classify_edge_cases() {
        assert_eq!(classify(br#"["1","1","lv:a","phx_join",{}]"#), Some(true));
        assert_eq!(
            classify(br#" [ null , 12 , "t" , "phx_join" , {} ] "#),
            Some(false)
        );
        assert_eq!(classify(br#"["1","1","lv:a","phx_join"]"#), None);
        assert_eq!(classify(br#"["1","1",null,"phx_join",{}]"#), None);
        assert_eq!(classify(br#"["1","1","lv:a","phx_join"#), None);
        assert_eq!(classify(b"[\"1\",\"1\",\"lv:\na\",\"phx_join\",{}]"), None);
        assert_eq!(classify(br#"{"topic":"lv:a"}"#), None);
        assert_eq!(classify(br#"{}"#), None);
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"phx_join"), None);
    }

    #[test]
    fn unmasked_and_malformed_streams() {
        let bytes = frame(true, 1, join("lv:x", 1).as_bytes(), None);
        assert_eq!(peek(&bytes).total(), j(1, 1));
        // Continuation without a message, reserved opcode, fragmented ping,
        // oversized ping, a new message inside a fragmented one, 64-bit
        // length with the top bit set: done, nothing more counted.
        let bad = [
            frame(true, 0, b"x", Some(KEY)),
            frame(true, 3, b"x", Some(KEY)),
            frame(false, 9, b"x", Some(KEY)),
            frame(true, 9, &[0; 126], Some(KEY)),
            [
                frame(false, 1, b"[", Some(KEY)),
                frame(true, 1, b"x", Some(KEY)),
            ]
            .concat(),
            vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4],
        ];
        for b in bad {
            let mut p = peek(&b);
            assert!(p.done(), "{b:?}");
            assert_eq!(p.feed(&text(&join("lv:x", 1))), j(0, 0));
        }
    }

    #[test]
    fn long_header_and_compressed_messages_are_not_counted() {
        let topic = format!("lv:{}", "t".repeat(300));
        assert_eq!(peek(&text(&join(&topic, 1))).total(), j(0, 0));
        let mut bytes = text(&join("lv:x", 1));
        bytes[0] |= 0x40; // RSV1: permessage-deflate
        bytes.extend(text(&join("lv:y", 2)));
        assert_eq!(peek(&bytes).total(), j(1, 1));
    }

    /// xorshift64*: deterministic, good enough to shake a parser.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn random_sizes(rng: &mut Rng) -> Vec<usize> {
        let max = [1, 4, 16, 300, 5000][rng.below(5)];
        (0..1 + rng.below(8)).map(|_| 1 + rng.below(max)).collect()
    }

    #[test]
    fn fuzz_random_bytes() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..10_000 {
            let budget = [0, 1, 13, 256, 2048, BUDGET][rng.below(6)];
            let len = rng.below(if budget == BUDGET { 20_000 } else { 4_096 });
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias toward plausible headers so parsing goes deeper.
            if !bytes.is_empty() && rng.below(2) == 0 {
                bytes[0] = [0x81, 0x01, 0x80, 0x89, 0x82][rng.below(5)];
            }
            let mut p = JoinPeeker::new(budget, 1 + rng.below(8) as u32);
            feed_chunks(&mut p, &bytes, &random_sizes(&mut rng));
            if len >= budget {
                assert!(p.done(), "not done after {len} bytes, budget {budget}");
            }
        }
    }

    #[test]
    fn fuzz_random_streams_are_chunking_invariant() {
        let mut rng = Rng(42);
        let mut seen = 0;
        for round in 0..2_000 {
            let mut bytes = Vec::new();
            let mut expected = Joins::default();
            let mut text_frames = 0;
            for _ in 0..rng.below(6) {
                let mask = (rng.below(4) != 0).then(|| (rng.next() as u32).to_be_bytes());
                match rng.below(5) {
                    0 => bytes.extend(frame(true, 9 + rng.below(2) as u8, &[1; 5], mask)),
                    1 => bytes.extend(frame(true, 2, &vec![0; rng.below(300)], mask)),
                    2 => {
                        bytes.extend(frame(
                            true,
                            1,
                            br#"[null,"1","phoenix","heartbeat",{}]"#,
                            mask,
                        ));
                        text_frames += 1;
                    }
                    _ => {
                        let lv = rng.below(2) == 0;
                        let msg = join(if lv { "lv:phx-r" } else { "room:r" }, round);
                        let b = msg.as_bytes();
                        let cut = 1 + rng.below(b.len() - 1);
                        let whole_frame = rng.below(2) == 0;
                        if whole_frame {
                            bytes.extend(frame(true, 1, b, mask));
                            text_frames += 1;
                        } else {
                            bytes.extend(frame(false, 1, &b[..cut], mask));
                            bytes.extend(frame(true, 0, &b[cut..], mask));
                            text_frames += 2;
                        }
                        // Counted when the whole message is within the frame
                        // limit, or when the limit stops it after a first
                        // fragment that already holds topic and event.
                        let prefix_counts =
                            text_frames == 9 && !whole_frame && classify(&b[..cut]).is_some();
                        if text_frames <= 8 || prefix_counts {
                            expected.joins += 1;
                            expected.liveview_joins += u32::from(lv);
                        }
                    }
                }
            }
            let mut whole = JoinPeeker::new(BUDGET, 8);
            whole.feed(&bytes);
            assert_eq!(whole.total(), expected, "round {round}");
            let mut p = JoinPeeker::new(BUDGET, 8);
            assert_eq!(
                feed_chunks(&mut p, &bytes, &random_sizes(&mut rng)),
                expected
            );
            assert_eq!(p.done(), whole.done());
            seen += expected.joins;
        }
        assert!(seen > 1_000, "the generator makes joins: {seen}");
    }

    #[test]
    fn peeker_memory_is_fixed() {
        assert!(std::mem::size_of::<JoinPeeker>() < 400);
    }

    const WINDOW: Duration = Duration::from_secs(10);

    #[test]
    fn reconnect_within_window_once() {
        let t = ReconnectTracker::new(4096, WINDOW);
        let ip = 0xffff_7f00_0001u128;
        t.closed(ip, 1_000);
        assert!(t.is_reconnect(ip, 1_500));
        assert!(!t.is_reconnect(ip, 1_600));
        // A second close gives a second reconnect.
        t.closed(ip, 2_000);
        t.closed(ip, 2_100); // same client: replaces, does not add
        assert!(t.is_reconnect(ip, 12_100));
        assert!(!t.is_reconnect(ip, 12_100));
    }

    #[test]
    fn reconnect_after_window_or_unknown() {
        let t = ReconnectTracker::new(4096, WINDOW);
        t.closed(1, 0);
        assert!(!t.is_reconnect(1, 10_001));
        assert!(!t.is_reconnect(2, 5));
        // A close stamped a little after the join (clocks of two threads).
        t.closed(3, 1_005);
        assert!(t.is_reconnect(3, 1_000));
    }

    #[test]
    fn clients_do_not_interfere() {
        let t = ReconnectTracker::new(4096, WINDOW);
        let clients: Vec<u128> = (0..50u128)
            .map(|i| (i << 64) | 0xffff_0a00_0000 | i)
            .collect();
        for (i, &c) in clients.iter().enumerate() {
            t.closed(c, 100 + i as u64);
        }
        assert!(!t.is_reconnect(0xdead_beef, 200));
        for &c in &clients {
            assert!(t.is_reconnect(c, 300), "{c:x}");
            assert!(!t.is_reconnect(c, 300));
        }
    }

    #[test]
    fn tiny_table_evicts_oldest_and_expired() {
        // One bucket of four slots shared by everyone.
        let t = ReconnectTracker::new(1, WINDOW);
        assert_eq!(t.slots.len(), BUCKET);
        for c in 0..5u128 {
            t.closed(c, 1_000 + c as u64);
        }
        assert!(!t.is_reconnect(0, 2_000), "oldest evicted");
        for c in 1..5u128 {
            assert!(t.is_reconnect(c, 2_000));
        }
        for c in 10..14u128 {
            t.closed(c, 0);
        }
        t.closed(20, 20_000); // all others expired: takes one of them
        assert!(t.is_reconnect(20, 20_001));
    }

    #[test]
    fn concurrent_closes_and_joins() {
        fn shared<T: Send + Sync>(_: &T) {}
        let t = ReconnectTracker::new(4096, WINDOW);
        shared(&t);
        let ip = 77u128;
        t.closed(ip, 0);
        let hits: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| t.is_reconnect(ip, 1))).collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(hits, 1, "one close, one reconnect");
        std::thread::scope(|s| {
            for k in 0..4u128 {
                let t = &t;
                s.spawn(move || {
                    for c in 0..1_000u128 {
                        t.closed(c * 4 + k, 5);
                        t.is_reconnect(c * 4 + k, 6);
                    }
                });
            }
        });
    }
}
