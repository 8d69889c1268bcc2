//! The request-path half of shared rate limits (`[cluster]`): what this node
//! admitted since the last sync, per client, in a fixed-size lock-free table
//! the cluster's sync task drains every `sync_interval`; and the wire form of
//! one node's round (what `cluster::link` publishes and applies).
//!
//! The table holds at most [`CAPACITY`] clients per sync period, whatever
//! addresses talk to bext: 4,096 buckets of 4 slots, one `AtomicU64` each,
//! the client's [`cluster_hash`](super::client_key::ClientKey::cluster_hash)
//! packed with its count. The bucket is the hash's low 12 bits, so a slot
//! only stores the other 52 and a 12-bit count: one compare-and-swap per
//! admitted request, no lock, no allocation. A client that finds its bucket
//! full is not shared this round (counted: the other nodes then undercount
//! it; its local limit still holds). Counts saturate at 4,095 per period,
//! far above any admitted burst.

use std::sync::atomic::{AtomicU64, Ordering};

const BUCKET_BITS: u32 = 12;
const BUCKETS: usize = 1 << BUCKET_BITS;
const WAYS: usize = 4;
/// Clients one node can share per sync period.
pub(crate) const CAPACITY: usize = BUCKETS * WAYS;
const LOW: u64 = (1 << BUCKET_BITS) - 1;

pub(crate) struct Admissions {
    slots: Box<[AtomicU64]>,
    /// Admissions not recorded because their bucket was full.
    untracked: AtomicU64,
}

impl std::fmt::Debug for Admissions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admissions").finish_non_exhaustive()
    }
}

impl Admissions {
    pub fn new() -> Admissions {
        Admissions {
            slots: (0..CAPACITY).map(|_| AtomicU64::new(0)).collect(),
            untracked: AtomicU64::new(0),
        }
    }

    /// One admitted request of client `hash` (the request path).
    pub fn record(&self, hash: u64) {
        let base = (hash & LOW) as usize * WAYS;
        let tag = hash & !LOW;
        for slot in &self.slots[base..base + WAYS] {
            let mut w = slot.load(Ordering::Relaxed);
            loop {
                // An occupied slot has a count ≥ 1, so 0 is free.
                let next = if w == 0 {
                    tag | 1
                } else if w & !LOW == tag {
                    if w & LOW == LOW {
                        return;
                    }
                    w + 1
                } else {
                    break;
                };
                match slot.compare_exchange_weak(w, next, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => return,
                    Err(now) => w = now,
                }
            }
        }
        self.untracked.fetch_add(1, Ordering::Relaxed);
    }

    /// Empties the table into `out` as `(hash, count)`; returns the
    /// admissions that did not fit since the last drain. A `swap` per slot:
    /// a request racing it lands in the next period, never lost.
    pub fn drain(&self, out: &mut Vec<(u64, u16)>) -> u64 {
        for (i, slot) in self.slots.iter().enumerate() {
            let w = slot.swap(0, Ordering::Relaxed);
            if w != 0 {
                let bucket = (i / WAYS) as u64;
                out.push(((w & !LOW) | bucket, (w & LOW) as u16));
            }
        }
        self.untracked.swap(0, Ordering::Relaxed)
    }
}

/// One limiter's admissions in a round: which limiter (0 = `[limits] rate`,
/// i + 1 = route rule i), its spec's fingerprint (a node applies counts only
/// to a limiter with the same spec), and the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    pub limiter: u16,
    pub spec: u64,
    pub counts: Vec<(u64, u16)>,
}

const MAGIC: &[u8; 4] = b"bxr1";

/// `MAGIC, instance (8 bytes), then per section: limiter u16, spec u64,
/// n u32, n × (hash u64, count u16)`, all big-endian. At most
/// `CAPACITY` entries per section: bounded whatever the traffic.
pub(crate) fn encode(instance: u64, sections: &[Section]) -> Vec<u8> {
    let entries: usize = sections.iter().map(|s| s.counts.len()).sum();
    let mut out = Vec::with_capacity(12 + sections.len() * 14 + entries * 10);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&instance.to_be_bytes());
    for s in sections {
        out.extend_from_slice(&s.limiter.to_be_bytes());
        out.extend_from_slice(&s.spec.to_be_bytes());
        out.extend_from_slice(&(s.counts.len() as u32).to_be_bytes());
        for (h, c) in &s.counts {
            out.extend_from_slice(&h.to_be_bytes());
            out.extend_from_slice(&c.to_be_bytes());
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for anything malformed (a hostile or
/// foreign message is dropped whole).
pub(crate) fn decode(bytes: &[u8]) -> Option<(u64, Vec<Section>)> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return None;
    }
    let instance = r.u64()?;
    let mut sections = Vec::new();
    while !r.0.is_empty() {
        let limiter = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let spec = r.u64()?;
        let n = u32::from_be_bytes(r.take(4)?.try_into().ok()?) as usize;
        if n > CAPACITY || r.0.len() < n * 10 {
            return None;
        }
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            let h = r.u64()?;
            let c = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
            counts.push((h, c));
        }
        sections.push(Section {
            limiter,
            spec,
            counts,
        });
        if sections.len() > usize::from(u16::MAX) {
            return None;
        }
    }
    Some((instance, sections))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_client_and_drains_to_empty() {
        let t = Admissions::new();
        for _ in 0..5 {
            t.record(0xdead_beef_0000_0123);
        }
        t.record(42);
        let mut out = vec![];
        assert_eq!(t.drain(&mut out), 0);
        out.sort();
        assert_eq!(out, vec![(42, 1), (0xdead_beef_0000_0123, 5)]);
        out.clear();
        t.drain(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_full_bucket_counts_what_it_cannot_hold_and_counts_saturate() {
        let t = Admissions::new();
        // Six clients in one bucket (same low 12 bits): four fit.
        for k in 0..6u64 {
            t.record((k + 1) << 20 | 7);
        }
        for _ in 0..5000 {
            t.record(1 << 20 | 7);
        }
        let mut out = vec![];
        assert_eq!(t.drain(&mut out), 2);
        assert_eq!(out.len(), WAYS);
        assert!(out.contains(&(1 << 20 | 7, LOW as u16)), "{out:?}");
    }

    #[test]
    fn a_million_clients_stay_in_a_fixed_table() {
        let t = Admissions::new();
        for k in 0..1_000_000u64 {
            t.record(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        let mut out = vec![];
        let lost = t.drain(&mut out);
        assert_eq!(out.len(), CAPACITY);
        assert_eq!(lost as usize + CAPACITY, 1_000_000);
    }

    #[test]
    fn the_wire_form_round_trips_and_refuses_garbage() {
        let sections = vec![
            Section {
                limiter: 0,
                spec: 9,
                counts: vec![(1, 2), (u64::MAX, 4095)],
            },
            Section {
                limiter: 3,
                spec: 1,
                counts: vec![],
            },
        ];
        let wire = encode(77, &sections);
        assert_eq!(decode(&wire), Some((77, sections)));
        assert_eq!(decode(b"nope"), None);
        assert_eq!(decode(&wire[..wire.len() - 1]), None);
        let mut huge = encode(1, &[]);
        huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(decode(&huge), None);
    }
}
