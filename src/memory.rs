//! Giving memory back to the OS once a worker thread's connections are gone.
//!
//! Allocators keep freed memory for reuse: after a burst of connections (a
//! deploy's reconnect storm, a flood) a proxy that goes quiet would otherwise
//! stay at its peak RSS. mimalloc returns a thread's free pages only while
//! that thread allocates, so an idle worker never does. Each connection holds
//! an [`Active`] guard; when the last one on a worker thread ends, a collection
//! is scheduled on that thread a second later (at most one pending per
//! thread, and skipped if connections came back), so a busy proxy pays
//! nothing and an idle one shrinks.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static ACTIVE: Cell<usize> = const { Cell::new(0) };
    static PENDING: Cell<bool> = const { Cell::new(false) };
}

/// How long a worker thread must stay without connections before its freed
/// memory is returned.
const QUIET: Duration = Duration::from_secs(1);

/// Counts one connection on the current worker thread while it lives.
pub(crate) struct Active(());

impl Active {
    pub(crate) fn new() -> Active {
        ACTIVE.with(|a| a.set(a.get() + 1));
        Active(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        let left = ACTIVE.with(|a| {
            let n = a.get().saturating_sub(1);
            a.set(n);
            n
        });
        if left > 0 || PENDING.with(Cell::get) {
            return;
        }
        // Outside a runtime (process exit) there is nothing to give back for.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        PENDING.with(|p| p.set(true));
        // Pingora's worker runtimes are one per thread, so this runs on the
        // thread whose memory was freed.
        rt.spawn(async {
            tokio::time::sleep(QUIET).await;
            PENDING.with(|p| p.set(false));
            if ACTIVE.with(Cell::get) == 0 {
                collect();
            }
        });
    }
}

/// Returns the current thread's free memory to the OS.
fn collect() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect has no preconditions; it works on the calling
    // thread's heap.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(not(feature = "mimalloc"), target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
