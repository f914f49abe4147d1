//! Liveness of the agent's loops: `/livez` fails, naming the loop, when a registered loop has
//! stopped making progress, so kubelet restarts a wedged agent.
//!
//! # The approach: progress beats plus an on-demand ping
//!
//! A loop that is merely idle (no pod changes, no file events for hours) must not look wedged,
//! and an idle agent must not wake up just to prove it is alive. So:
//!
//! - A loop **beats** ([`Heartbeat::beat`], one relaxed atomic store of a monotonic timestamp)
//!   whenever it makes progress. That alone says nothing about an idle loop.
//! - `/livez` **pings** every loop that has shown no sign of life for a couple of seconds
//!   (at most one outstanding ping per loop). The ping is a [`tokio::sync::Notify`] permit that
//!   the loop answers from the `select!` it already waits in ([`Heartbeat::pinged`]) or around
//!   the future it awaits ([`Heartbeat::answer_pings_while`]). A loop that is wedged (blocked in a
//!   system call, deadlocked, spinning, never returning to its `select!`) cannot answer.
//! - `/livez` waits up to 250 ms for the answers, then judges: a loop is **stalled** when a ping
//!   it was sent has gone unanswered for longer than the loop's `stall_after`. A fresh ping that
//!   is not answered yet gives the loop the benefit of the doubt until `stall_after` has passed,
//!   so a loop busy with a long but legitimate burst is not declared dead.
//!
//! Pings are sent only while `/livez` is queried (kubelet's liveness probe, every 10 s by
//! default): no timer, no background task, no wakeups when nobody asks. A stall is therefore
//! reported at the first `/livez` after `stall_after` has passed since the unanswered ping.
//!
//! A loop that ends drops its [`Heartbeat`]s and is no longer checked: a critical loop that
//! ends must end the agent (design rule), which is a louder signal than `/livez`.
//!
//! # Test hook (test-only)
//!
//! `MOUNTLAG_TEST_STALL=<loop>[,<loop>...]` asks the named loops to wedge themselves so tests can
//! see `/livez` fail; the loop side checks [`Liveness::stall_requested`] (read once per
//! process). `MOUNTLAG_TEST_STALL_AFTER=<duration>` (e.g. `1s`) replaces every `stall_after` so
//! such a test does not wait for production thresholds. Only the testbed sets these variables;
//! the agent logs a warning when either is set. They are not a user-facing interface.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Names the loops to wedge (comma-separated). Test-only: set by the testbed, never by users.
pub const TEST_STALL_ENV: &str = "MOUNTLAG_TEST_STALL";
/// Replaces every loop's `stall_after` (a duration such as `1s`). Test-only.
pub const TEST_STALL_AFTER_ENV: &str = "MOUNTLAG_TEST_STALL_AFTER";

/// A loop silent for this long (or half its `stall_after`, whichever is shorter) gets pinged.
const PING_AFTER: Duration = Duration::from_secs(2);
/// How long one `/livez` request waits for the loops it pinged.
const PONG_WAIT: Duration = Duration::from_millis(250);

/// The set of loops whose liveness `/livez` reports. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Liveness {
    inner: Arc<Inner>,
}

struct Inner {
    origin: Instant,
    loops: Mutex<Vec<Weak<LoopState>>>,
    /// Woken whenever a loop answers a ping.
    pong: Arc<Notify>,
    stall_after_override: Option<Duration>,
}

struct LoopState {
    name: &'static str,
    stall_after: Duration,
    origin: Instant,
    /// Last sign of life (beat or answered ping), nanoseconds since `origin` plus one.
    last_sign: AtomicU64,
    /// When the newest ping was sent, same clock; outstanding while newer than `last_sign`.
    ping_sent: AtomicU64,
    ping: Notify,
    pong: Arc<Notify>,
    hook: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for Liveness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Liveness")
            .field("loops", &self.loop_names())
            .finish_non_exhaustive()
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Self::new()
    }
}

fn stamp(origin: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(origin).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

fn since(origin: Instant, stamp: u64, now: Instant) -> Duration {
    let at = origin + Duration::from_nanos(stamp.saturating_sub(1));
    now.saturating_duration_since(at)
}

/// The test hook's parsed environment, read once per process.
struct TestHook {
    stall: Vec<String>,
    stall_after: Option<Duration>,
}

fn test_hook() -> &'static TestHook {
    static HOOK: OnceLock<TestHook> = OnceLock::new();
    HOOK.get_or_init(|| {
        let stall: Vec<String> = std::env::var(TEST_STALL_ENV)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let stall_after = std::env::var(TEST_STALL_AFTER_ENV)
            .ok()
            .and_then(|v| humantime::parse_duration(v.trim()).ok());
        if !stall.is_empty() || stall_after.is_some() {
            tracing::warn!(
                stall = ?stall,
                stall_after = ?stall_after,
                "liveness test hook active ({TEST_STALL_ENV} / {TEST_STALL_AFTER_ENV}): test-only, never set these in production"
            );
        }
        TestHook { stall, stall_after }
    })
}

impl Liveness {
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                origin: Instant::now(),
                loops: Mutex::new(Vec::new()),
                pong: Arc::new(Notify::new()),
                stall_after_override: test_hook().stall_after,
            }),
        }
    }

    /// Test-only hook: does `MOUNTLAG_TEST_STALL` (read once per process) name this loop?
    ///
    /// The loop side wedges itself when it does (for example by awaiting
    /// `std::future::pending()` without answering pings once it has started), so the testbed
    /// can watch `/livez` fail. Always `false` unless the testbed set the variable.
    pub fn stall_requested(loop_name: &str) -> bool {
        test_hook().stall.iter().any(|s| s == loop_name)
    }

    /// Registers a loop. The loop must [`Heartbeat::beat`] on progress and answer pings (see the
    /// module docs); `/livez` fails naming `loop_name` when a ping stays unanswered for longer
    /// than `stall_after`. Dropping every clone of the returned heartbeat unregisters the loop.
    pub fn register(&self, loop_name: &'static str, stall_after: Duration) -> Heartbeat {
        self.register_inner(loop_name, stall_after, None)
    }

    /// Like [`Liveness::register`], for a loop that runs on its own thread and sleeps in a
    /// system call: `on_ping` is called (from the `/livez` request, so it must be quick and
    /// must not block) each time the loop is pinged, e.g. to write to an eventfd the thread
    /// polls. The thread answers by calling [`Heartbeat::beat`] when it wakes up.
    pub fn register_with_ping_hook(
        &self,
        loop_name: &'static str,
        stall_after: Duration,
        on_ping: impl Fn() + Send + Sync + 'static,
    ) -> Heartbeat {
        self.register_inner(loop_name, stall_after, Some(Box::new(on_ping)))
    }

    fn register_inner(
        &self,
        name: &'static str,
        stall_after: Duration,
        hook: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Heartbeat {
        let origin = self.inner.origin;
        let state = Arc::new(LoopState {
            name,
            stall_after: self.inner.stall_after_override.unwrap_or(stall_after),
            origin,
            last_sign: AtomicU64::new(stamp(origin, Instant::now())),
            ping_sent: AtomicU64::new(0),
            ping: Notify::new(),
            pong: Arc::clone(&self.inner.pong),
            hook,
        });
        let mut loops = self.lock_loops();
        loops.retain(|l| l.strong_count() > 0);
        loops.push(Arc::downgrade(&state));
        Heartbeat { state }
    }

    fn lock_loops(&self) -> std::sync::MutexGuard<'_, Vec<Weak<LoopState>>> {
        // A poisoned lock only means a panic elsewhere mid-push; the list stays usable.
        self.inner
            .loops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn live_loops(&self) -> Vec<Arc<LoopState>> {
        self.lock_loops().iter().filter_map(Weak::upgrade).collect()
    }

    /// Names of the registered loops, in registration order.
    pub fn loop_names(&self) -> Vec<&'static str> {
        self.live_loops().iter().map(|l| l.name).collect()
    }

    /// What `/livez` answers: pings the loops that have been silent for a while, waits up to
    /// 250 ms for their answers, and reports the loops whose ping stayed unanswered for longer
    /// than their `stall_after`.
    pub async fn check(&self) -> LivenessReport {
        self.check_with(PONG_WAIT).await
    }

    async fn check_with(&self, pong_wait: Duration) -> LivenessReport {
        let loops = self.live_loops();
        let now = Instant::now();
        let mut waiting = false;
        for state in &loops {
            waiting |= state.ping_if_silent(now);
        }
        if waiting {
            let deadline = tokio::time::Instant::now() + pong_wait;
            loop {
                let pong = self.inner.pong.notified();
                tokio::pin!(pong);
                pong.as_mut().enable();
                if loops.iter().all(|l| !l.ping_outstanding()) {
                    break;
                }
                if tokio::time::timeout_at(deadline, pong).await.is_err() {
                    break;
                }
            }
        }
        self.report(&loops, Instant::now())
    }

    fn report(&self, loops: &[Arc<LoopState>], now: Instant) -> LivenessReport {
        let mut report = LivenessReport::default();
        for state in loops {
            report.loops.push(state.name);
            if let Some(stalled) = state.stalled(now) {
                report.stalled.push(stalled);
            }
        }
        report
    }
}

impl LoopState {
    fn now_stamp(&self) -> u64 {
        stamp(self.origin, Instant::now())
    }

    fn ping_outstanding(&self) -> bool {
        self.ping_sent.load(Ordering::Relaxed) > self.last_sign.load(Ordering::Relaxed)
    }

    fn ping_after(&self) -> Duration {
        PING_AFTER.min(self.stall_after / 2)
    }

    /// Sends a ping unless the loop showed life recently or a ping is already outstanding.
    /// Returns whether this loop has a ping outstanding now.
    fn ping_if_silent(&self, now: Instant) -> bool {
        if self.ping_outstanding() {
            return true;
        }
        let last = self.last_sign.load(Ordering::Relaxed);
        if since(self.origin, last, now) < self.ping_after() {
            return false;
        }
        self.ping_sent
            .store(stamp(self.origin, now).max(last + 1), Ordering::Relaxed);
        self.ping.notify_one();
        if let Some(hook) = &self.hook {
            hook();
        }
        true
    }

    fn stalled(&self, now: Instant) -> Option<Stalled> {
        if !self.ping_outstanding() {
            return None;
        }
        let unanswered = since(self.origin, self.ping_sent.load(Ordering::Relaxed), now);
        (unanswered >= self.stall_after).then(|| Stalled {
            loop_name: self.name,
            silent_for: since(self.origin, self.last_sign.load(Ordering::Relaxed), now),
            stall_after: self.stall_after,
        })
    }

    fn answer(&self) {
        self.last_sign.store(self.now_stamp(), Ordering::Relaxed);
        self.pong.notify_waiters();
    }
}

/// One loop's handle: beat on progress, answer pings. Cheap to clone; clones share the loop.
#[derive(Clone)]
pub struct Heartbeat {
    state: Arc<LoopState>,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("loop", &self.state.name)
            .field("stall_after", &self.state.stall_after)
            .finish()
    }
}

impl Heartbeat {
    /// The loop made progress. One relaxed atomic store of a monotonic timestamp; call it as
    /// often as convenient. It also counts as the answer to an outstanding ping.
    pub fn beat(&self) {
        self.state
            .last_sign
            .store(self.state.now_stamp(), Ordering::Relaxed);
    }

    /// Resolves when `/livez` pings this loop; the ping is answered when it resolves. Put it in
    /// the `select!` the loop waits in:
    ///
    /// ```ignore
    /// loop {
    ///     tokio::select! {
    ///         () = heartbeat.pinged() => continue,
    ///         input = inputs.recv() => { heartbeat.beat(); handle(input) }
    ///     }
    /// }
    /// ```
    ///
    /// Cancel-safe: a ping that arrives while the loop is busy is kept and answered on the next
    /// call.
    pub async fn pinged(&self) {
        self.state.ping.notified().await;
        self.state.answer();
    }

    /// Awaits `fut` while answering pings, then beats: for a loop that waits on one future at a
    /// time, e.g. `heartbeat.answer_pings_while(stream.try_next()).await` in a watch loop. A
    /// loop waiting here is alive (it is being polled); it is wedged only when it never gets
    /// back here.
    pub async fn answer_pings_while<F: Future>(&self, fut: F) -> F::Output {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                biased;
                out = &mut fut => {
                    self.beat();
                    return out;
                }
                () = self.pinged() => {}
            }
        }
    }

    /// For a loop that cannot await [`Heartbeat::pinged`] (a thread): is a ping waiting for an
    /// answer? Answers it (beats) when there is one.
    pub fn take_ping(&self) -> bool {
        let outstanding = self.state.ping_outstanding();
        if outstanding {
            self.state.answer();
        }
        outstanding
    }

    /// The registered loop name.
    pub fn loop_name(&self) -> &'static str {
        self.state.name
    }
}

/// The verdict of one `/livez` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LivenessReport {
    /// Every registered loop.
    pub loops: Vec<&'static str>,
    /// The loops that did not answer a ping within their `stall_after`.
    pub stalled: Vec<Stalled>,
}

impl LivenessReport {
    pub fn is_alive(&self) -> bool {
        self.stalled.is_empty()
    }

    /// The `/livez` body.
    pub fn body(&self) -> String {
        if self.is_alive() {
            if self.loops.is_empty() {
                "ok\n".to_string()
            } else {
                format!("ok: {}\n", self.loops.join(", "))
            }
        } else {
            let stalled: Vec<String> = self
                .stalled
                .iter()
                .map(|s| {
                    format!(
                        "{} (no sign of life for {:.1}s, stall_after {:.1}s)",
                        s.loop_name,
                        s.silent_for.as_secs_f64(),
                        s.stall_after.as_secs_f64()
                    )
                })
                .collect();
            format!("stalled: {}\n", stalled.join("; "))
        }
    }
}

/// A loop that stopped answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stalled {
    pub loop_name: &'static str,
    /// Time since its last beat or answered ping.
    pub silent_for: Duration,
    pub stall_after: Duration,
}

#[cfg(test)]
mod tests;
