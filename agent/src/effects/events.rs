//! Rate limiting of Events, so a flapping mount cannot flood the API.
//!
//! kube-runtime's recorder already folds repeats of one (reason, object) into an `EventSeries`
//! (one PATCH instead of a new object); on top of that each (pod, reason) may publish at most
//! `burst` Events and then one per `interval`, and the whole agent at most `global_per_minute`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct EventLimiter {
    burst: u32,
    interval: Duration,
    global_per_minute: u32,
    buckets: HashMap<(String, &'static str), Bucket>,
    global: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn take(&mut self, capacity: f64, per_second: f64, now: Instant) -> bool {
        let elapsed = self.last.map_or(0.0, |last| {
            now.saturating_duration_since(last).as_secs_f64()
        });
        self.tokens = (self.tokens + elapsed * per_second).min(capacity);
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for EventLimiter {
    fn default() -> Self {
        Self::new(3, Duration::from_secs(60), 120)
    }
}

impl EventLimiter {
    pub fn new(burst: u32, interval: Duration, global_per_minute: u32) -> Self {
        Self {
            burst,
            interval,
            global_per_minute,
            buckets: HashMap::new(),
            global: Bucket {
                tokens: f64::from(global_per_minute),
                last: None,
            },
        }
    }

    pub fn allow(&mut self, pod_uid: &str, reason: &'static str, now: Instant) -> bool {
        let capacity = f64::from(self.burst);
        let per_second = 1.0 / self.interval.as_secs_f64().max(0.001);
        let bucket = self
            .buckets
            .entry((pod_uid.to_string(), reason))
            .or_insert(Bucket {
                tokens: capacity,
                last: None,
            });
        if !bucket.take(capacity, per_second, now) {
            return false;
        }
        let global = f64::from(self.global_per_minute);
        self.global.take(global, global / 60.0, now)
    }

    /// Drops the buckets of pods that are gone.
    pub fn retain_pods(&mut self, alive: impl Fn(&str) -> bool) {
        self.buckets.retain(|(uid, _), _| alive(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUCK: &str = "SecretMountStuck";

    #[test]
    fn a_burst_then_one_per_interval_per_pod_and_reason() {
        let t0 = Instant::now();
        let mut limiter = EventLimiter::new(2, Duration::from_secs(10), 1000);
        let reason = STUCK;
        assert!(limiter.allow("p", reason, t0));
        assert!(limiter.allow("p", reason, t0));
        assert!(!limiter.allow("p", reason, t0));
        assert!(limiter.allow("p", "SecretMountRecovered", t0), "per reason");
        assert!(limiter.allow("q", reason, t0), "per pod");
        assert!(!limiter.allow("p", reason, t0 + Duration::from_secs(9)));
        assert!(limiter.allow("p", reason, t0 + Duration::from_secs(10)));
    }

    #[test]
    fn the_whole_agent_is_capped() {
        let t0 = Instant::now();
        let mut limiter = EventLimiter::new(5, Duration::from_secs(1), 3);
        let allowed = (0..10)
            .filter(|i| limiter.allow(&format!("pod-{i}"), STUCK, t0))
            .count();
        assert_eq!(allowed, 3);
        assert!(limiter.allow("pod-x", STUCK, t0 + Duration::from_secs(20)));
    }
}
