//! The process's logger: `env_logger` (filter from `RUST_LOG`, default
//! `info`) behind a per-call-site rate limit, so no loop can fill a disk with
//! one line. Pingora's own log lines go through it too (it logs with the same
//! `log` crate). A call site (file and line) may write [`PER_SECOND`] lines a
//! second; what goes over is counted, reported by the site's next line once
//! its second has passed (`… N more lines like this were suppressed`), and
//! in `bext_log_lines_suppressed_total`.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Log, Metadata, Record};

/// Lines per call site per second.
pub const PER_SECOND: u32 = 10;
/// Call-site slots (sites that hash to one slot share its budget).
const SLOTS: usize = 512;

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Lines suppressed since start (the `bext_log_lines_suppressed_total` metric).
pub fn suppressed_total() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

struct Slot {
    second: AtomicU64,
    lines: AtomicU32,
    suppressed: AtomicU64,
}

struct Limited {
    inner: env_logger::Logger,
    slots: Box<[Slot]>,
}

/// Installs the logger (once, at start-up).
pub fn init() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    let max = inner.filter();
    if log::set_boxed_logger(Box::new(Limited::new(inner))).is_ok() {
        log::set_max_level(max);
    }
}

fn site(record: &Record<'_>) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    record.file().hash(&mut h);
    record.line().hash(&mut h);
    record.target().hash(&mut h);
    (h.finish() as usize) % SLOTS
}

impl Limited {
    fn new(inner: env_logger::Logger) -> Limited {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                second: AtomicU64::new(0),
                lines: AtomicU32::new(0),
                suppressed: AtomicU64::new(0),
            })
            .collect();
        Limited { inner, slots }
    }

    /// Whether `record` may be written now; reports what its site suppressed
    /// in an earlier second first.
    fn admit(&self, record: &Record<'_>) -> bool {
        let slot = &self.slots[site(record)];
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != now
            && slot
                .second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.lines.store(0, Ordering::Relaxed);
            let missed = slot.suppressed.swap(0, Ordering::Relaxed);
            if missed > 0 {
                self.inner.log(
                    &Record::builder()
                        .args(format_args!(
                            "{missed} more lines like the next one were suppressed (at most {PER_SECOND} a second from one place)"
                        ))
                        .level(record.level())
                        .target(record.target())
                        .file(record.file())
                        .line(record.line())
                        .build(),
                );
            }
        }
        if slot.lines.fetch_add(1, Ordering::Relaxed) < PER_SECOND {
            return true;
        }
        slot.suppressed.fetch_add(1, Ordering::Relaxed);
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        false
    }
}

impl Log for Limited {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if self.inner.matches(record) && self.admit(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_site_is_cut_at_its_budget_and_others_are_not() {
        let limited = Limited::new(env_logger::Builder::new().build());
        let rec = |line| {
            Record::builder()
                .args(format_args!("x"))
                .file(Some("src/a.rs"))
                .line(Some(line))
                .build()
        };
        let before = suppressed_total();
        let admitted = (0..1000).filter(|_| limited.admit(&rec(7))).count();
        // One second may turn over during the loop: at most two budgets.
        assert!(
            (PER_SECOND as usize..=2 * PER_SECOND as usize).contains(&admitted),
            "{admitted}"
        );
        assert!(suppressed_total() - before >= 1000 - 2 * PER_SECOND as u64);
        let other = (8..).find(|l| site(&rec(*l)) != site(&rec(7))).unwrap();
        assert!(
            limited.admit(&rec(other)),
            "another call site has its own budget"
        );
    }
}
