//! Where a node is in the purge stream, and whether it can still prove it
//! has seen every purge: pure logic over what `XINFO STREAM` reports, so
//! the rules are tested without a Redis.
//!
//! A node may have missed purges when the stream was trimmed past it: its
//! last applied id is older than the stream's first entry and entries were
//! removed (`entries-added` > `length`; trimming by `MAXLEN ~` removes the
//! oldest first). Also when an entry newer than its last one was deleted
//! with `XDEL` (`max-deleted-entry-id`, which trimming does not move), when
//! the stream it was reading is gone (Redis restarted empty, key deleted),
//! when the stream was recreated (`entries-added` went down), or when Redis
//! lost its data: every node keeps the value of an epoch key that the first
//! node to connect sets (`SET … NX`), re-read on each reconnect; a
//! different (or missing) epoch means Redis restarted empty or was flushed,
//! so purges published before may never have been read.

use std::fmt;

/// A stream entry id, `ms-seq`, ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct EntryId {
    pub ms: u64,
    pub seq: u64,
}

impl EntryId {
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    pub fn parse(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// What `XINFO STREAM` told (the fields bext uses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StreamInfo {
    pub length: u64,
    pub last_generated: EntryId,
    /// Redis ≥ 7.0.
    pub max_deleted: Option<EntryId>,
    /// Redis ≥ 7.0.
    pub entries_added: Option<u64>,
    pub first_entry: Option<EntryId>,
}

/// Why a node empties its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gap {
    Trimmed,
    Gone,
    Recreated,
    Epoch,
}

impl Gap {
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Trimmed => "the purge stream was trimmed past this node's last applied entry",
            Gap::Gone => "the purge stream is gone (Redis restarted empty, or the key was deleted)",
            Gap::Recreated => "the purge stream was recreated",
            Gap::Epoch => "Redis lost its data (restarted empty or flushed)",
        }
    }
}

/// This node's position: kept in memory only (a restarted node starts
/// with an empty cache, so it has nothing to prove).
#[derive(Debug, Clone)]
pub(crate) struct Cursor {
    /// The last entry applied (or skipped): XREAD continues after it.
    pub last: EntryId,
    /// Whether `last` refers to a stream this node has seen (a missing
    /// stream then means purges may have been lost).
    seen: bool,
    entries_added: u64,
    /// Deletions already accounted for (so one trim resets once).
    acknowledged: EntryId,
    /// The Redis epoch this position refers to.
    epoch: Option<String>,
}

impl Cursor {
    /// Starts at `from` (the process start, a little before: re-applying
    /// a purge is harmless, missing one is not).
    pub fn starting_at(from: EntryId) -> Cursor {
        Cursor {
            last: from,
            seen: false,
            entries_added: 0,
            acknowledged: EntryId::ZERO,
            epoch: None,
        }
    }

    /// After a (re)connect: the epoch key's value now. A change means
    /// this position is meaningless; the new stream is read from its start.
    pub fn check_epoch(&mut self, now: &str) -> Option<Gap> {
        match self.epoch.as_deref() {
            None => {
                self.epoch = Some(now.to_string());
                None
            }
            Some(e) if e == now => None,
            Some(_) => {
                *self = Cursor::starting_at(EntryId::ZERO);
                self.epoch = Some(now.to_string());
                Some(Gap::Epoch)
            }
        }
    }

    /// Compares what Redis says (`None`: no such stream) with what this
    /// node has applied; a gap means the cache must be emptied. The cursor
    /// is updated so the same gap is reported once.
    pub fn check(&mut self, info: Option<&StreamInfo>) -> Option<Gap> {
        let Some(info) = info else {
            let gap = self.seen.then_some(Gap::Gone);
            // Whatever stream appears next is read from its start.
            let epoch = self.epoch.take();
            *self = Cursor::starting_at(EntryId::ZERO);
            self.epoch = epoch;
            return gap;
        };
        let mut gap = None;
        if let Some(added) = info.entries_added {
            if self.seen && added < self.entries_added {
                gap = Some(Gap::Recreated);
                self.last = EntryId::ZERO;
                self.acknowledged = EntryId::ZERO;
            }
            self.entries_added = added;
        }
        // Entries were removed at all (unknown before Redis 7: assume so).
        let trimmed = info.entries_added.is_none_or(|added| added > info.length);
        if let Some(first) = info.first_entry.filter(|_| trimmed) {
            if gap.is_none()
                && self.last != EntryId::ZERO
                && first > self.last
                && first > self.acknowledged
            {
                gap = Some(Gap::Trimmed);
            }
            self.acknowledged = self.acknowledged.max(first);
        }
        if let Some(deleted) = info.max_deleted {
            if gap.is_none() && deleted > self.last && deleted > self.acknowledged {
                gap = Some(Gap::Trimmed);
            }
            self.acknowledged = self.acknowledged.max(deleted);
        }
        self.seen = true;
        gap
    }

    /// Records an entry as applied.
    pub fn advance(&mut self, id: EntryId) {
        self.last = self.last.max(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ms: u64) -> EntryId {
        EntryId { ms, seq: 0 }
    }

    /// A stream whose oldest entry is `first`, of `length` entries out of `added`.
    fn info(first: u64, length: u64, added: u64) -> StreamInfo {
        StreamInfo {
            length,
            last_generated: id(1000),
            max_deleted: Some(EntryId::ZERO),
            entries_added: Some(added),
            first_entry: Some(id(first)),
        }
    }

    #[test]
    fn ids_parse_and_order_like_redis() {
        let a = EntryId::parse("1700000000000-2").unwrap();
        let b = EntryId::parse("1700000000000-10").unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "1700000000000-2");
        assert!(EntryId::parse("12").is_none());
        assert!(EntryId::parse("x-1").is_none());
    }

    #[test]
    fn a_node_that_kept_up_sees_no_gap() {
        let mut c = Cursor::starting_at(id(100));
        // A young stream, never trimmed, newer than the node: nothing lost.
        assert_eq!(c.check(Some(&info(120, 5, 5))), None);
        c.advance(id(200));
        // Older entries trimmed: not ours to worry about.
        assert_eq!(c.check(Some(&info(150, 5, 9))), None);
        c.advance(id(1000));
        assert_eq!(c.check(Some(&info(1000, 1, 90))), None);
    }

    #[test]
    fn trimmed_past_the_last_applied_entry_is_a_gap_once() {
        let mut c = Cursor::starting_at(id(100));
        assert_eq!(c.check(Some(&info(50, 5, 5))), None);
        assert_eq!(c.check(Some(&info(300, 5, 50))), Some(Gap::Trimmed));
        assert_eq!(c.check(Some(&info(300, 6, 51))), None, "reported once");
        assert_eq!(c.check(Some(&info(400, 5, 80))), Some(Gap::Trimmed));
    }

    #[test]
    fn an_entry_deleted_after_ours_is_a_gap() {
        let mut c = Cursor::starting_at(id(100));
        let mut i = info(50, 5, 6);
        i.max_deleted = Some(id(120));
        assert_eq!(c.check(Some(&i)), Some(Gap::Trimmed));
        assert_eq!(c.check(Some(&i)), None);
    }

    #[test]
    fn a_stream_gone_or_recreated_is_a_gap() {
        let mut c = Cursor::starting_at(id(100));
        assert_eq!(c.check(None), None, "never seen: nothing lost");
        assert_eq!(c.check(Some(&info(50, 5, 5))), None);
        assert_eq!(c.check(None), Some(Gap::Gone));
        assert_eq!(c.last, EntryId::ZERO, "the next stream is read whole");
        assert_eq!(c.check(Some(&info(400, 1, 1))), None);
        c.advance(id(500));
        assert_eq!(c.check(Some(&info(400, 3, 3))), None);
        assert_eq!(c.check(Some(&info(600, 1, 1))), Some(Gap::Recreated));
    }

    #[test]
    fn a_new_epoch_is_a_gap_and_restarts_the_position() {
        let mut c = Cursor::starting_at(id(100));
        assert_eq!(c.check_epoch("e1"), None);
        assert_eq!(c.check(Some(&info(50, 5, 5))), None);
        c.advance(id(300));
        assert_eq!(c.check_epoch("e1"), None, "same Redis, reconnected");
        assert_eq!(c.check_epoch("e2"), Some(Gap::Epoch));
        assert_eq!(c.last, EntryId::ZERO);
        assert_eq!(c.check(None), None, "the new stream is not there yet");
        assert_eq!(c.check_epoch("e2"), None);
    }

    #[test]
    fn before_redis_7_the_first_entry_decides() {
        let old = |first: u64| StreamInfo {
            first_entry: Some(id(first)),
            ..StreamInfo::default()
        };
        let mut c = Cursor::starting_at(id(100));
        assert_eq!(c.check(Some(&old(50))), None);
        assert_eq!(c.check(Some(&old(150))), Some(Gap::Trimmed));
        assert_eq!(c.check(Some(&old(150))), None);
    }
}
