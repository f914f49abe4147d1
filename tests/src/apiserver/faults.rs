//! Faults the stand-in injects on request, as a real API server (or what sits in front of it)
//! shows them: every watch answered `410 Gone`, watches that stay open and silent past their
//! `timeoutSeconds`, throttling and errors with `Retry-After`, and streams cut in the middle
//! of an object. Each injected fault is counted in [`super::ApiStats::faults`].

use std::collections::BTreeMap;

/// What to inject; [`super::ApiServer::set_faults`] replaces the whole set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every new watch gets an `ERROR` event with a 410 `Expired` Status and ends, as after a
    /// compaction past its resourceVersion (lists still work, so clients relist and watch
    /// again, and get the 410 again).
    pub watches_gone: bool,
    /// New watches send nothing at all, neither events nor bookmarks, and ignore their
    /// `timeoutSeconds`: they end only when the client gives up or the server stops.
    pub silent_watches: bool,
    /// The next requests are refused with this answer.
    pub reject: Option<Rejection>,
    /// The next this many watch events (not bookmarks) are each cut in the middle of their
    /// JSON, and the stream ends there, as when a proxy or the network drops a connection
    /// mid-write.
    pub cut_watch_events: u64,
}

/// Requests answered with an error status and `Retry-After`, whatever they ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    /// 429 (`TooManyRequests`), 500, 503 or 504.
    pub status: u16,
    /// The `Retry-After` header, in seconds.
    pub retry_after_seconds: u64,
    /// How many requests still get it.
    pub remaining: u64,
}

/// A fault as counted: `watch_gone`, `watch_silent`, `watch_cut`, `reject_429`, ...
pub type FaultCounts = BTreeMap<String, u64>;

/// The watch fault a new watch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WatchFault {
    Gone,
    Silent,
}

impl Faults {
    pub(crate) fn watch_fault(&self) -> Option<WatchFault> {
        if self.watches_gone {
            Some(WatchFault::Gone)
        } else if self.silent_watches {
            Some(WatchFault::Silent)
        } else {
            None
        }
    }

    /// Takes one rejection, if any are left.
    pub(crate) fn take_rejection(&mut self) -> Option<Rejection> {
        let rejection = self.reject.as_mut().filter(|r| r.remaining > 0)?;
        rejection.remaining -= 1;
        Some(*rejection)
    }

    /// Takes one cut, if any are left.
    pub(crate) fn take_cut(&mut self) -> bool {
        if self.cut_watch_events == 0 {
            return false;
        }
        self.cut_watch_events -= 1;
        true
    }
}

/// `Status.reason` of an error status the stand-in injects.
pub(crate) fn reason_of(status: u16) -> &'static str {
    match status {
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}
