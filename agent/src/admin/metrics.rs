//! The agent's one prometheus-client [`Registry`]: what this module registers, the collectors
//! computed at scrape time, and the encoding `/metrics` serves.
//!
//! Every module registers its own metrics into the registry `run.rs` builds (no global
//! statics). This module adds:
//! - `mountlag_mounts{state}`, `mountlag_ready`, `mountlag_controller_pods{controller}` and
//!   `mountlag_build_info` ([`AgentMetrics::register`]);
//! - the standard `process_*` metrics, read from `/proc/self` on each scrape
//!   ([`ProcessCollector`], registered by [`AgentMetrics::register`]);
//! - `mountlag_inotify_watches`, read from a counter the watcher owns, and
//!   `mountlag_inotify_max_user_watches`, read from `fs.inotify.max_user_watches` on each scrape
//!   ([`register_inotify_watches`]);
//! - `mountlag_pem_cache_hits_total` and `mountlag_pem_cache_misses_total`, read from the PEM
//!   verdict cache on each scrape ([`register_pem_cache`]).
//!
//! `/metrics` answers in the Prometheus text format 0.0.4 (what `promtool check metrics` and
//! `curl` users expect) unless the `Accept` header asks for OpenMetrics, which Prometheus
//! servers do; both encodings come from prometheus-client.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mountlag_core::cert::SharedPemCache;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::reconcile::MountState;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
    /// `defaults` for the built-in verify-only list (no `controllers` in the file), else
    /// `config`: an entry a user wrote and expects to match something.
    origin: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Gauges the reconcile loop sets from its index, plus the build information and the process
/// collector.
#[derive(Debug, Clone)]
pub struct AgentMetrics {
    mounts: Family<StateLabel, Gauge>,
    ready: Gauge,
    controller_pods: Family<ControllerLabel, Gauge>,
}

impl AgentMetrics {
    /// Registers `mountlag_mounts{state}` (every state present from the start, at 0),
    /// `mountlag_build_info{version}` and the `process_*` metrics of this process.
    pub fn register(registry: &mut Registry) -> Self {
        let mounts = Family::<StateLabel, Gauge>::default();
        for state in MountState::ALL {
            let _ = mounts.get_or_create(&StateLabel {
                state: state.label(),
            });
        }
        registry.register(
            "mountlag_mounts",
            "Tracked secret/projected volume mounts by state",
            mounts.clone(),
        );
        registry.register(
            "mountlag_build",
            "Build information of the running agent",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let ready = Gauge::default();
        registry.register(
            "mountlag_ready",
            "1 while /readyz answers 200 (pods listed, Secrets synced, volumes scanned), else 0",
            ready.clone(),
        );
        let controller_pods = Family::<ControllerLabel, Gauge>::default();
        registry.register(
            "mountlag_controller_pods",
            "Pods on this node selected by each controller entry of the configuration",
            controller_pods.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector::default()));
        Self {
            mounts,
            ready,
            controller_pods,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Sets `mountlag_controller_pods` for every entry in `counts`; call it with every
    /// configured entry (0 for those that select nothing here), so an entry that matches no
    /// pod on any node shows as 0 everywhere. `defaults`: the entries are the built-in list.
    pub fn set_controller_pods<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a str, usize)>,
        defaults: bool,
    ) {
        let origin = if defaults { "defaults" } else { "config" };
        for (controller, pods) in counts {
            self.controller_pods
                .get_or_create(&ControllerLabel {
                    controller: controller.to_owned(),
                    origin,
                })
                .set(i64::try_from(pods).unwrap_or(i64::MAX));
        }
    }

    pub fn set_mounts(&self, state: &'static str, count: usize) {
        self.mounts
            .get_or_create(&StateLabel { state })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}

/// Registers `mountlag_inotify_watches`: the gauge reads `watches` on each scrape, so the
/// watcher only keeps the number current (e.g. `fetch_add`/`fetch_sub` when it tracks or
/// untracks a volume directory).
pub fn register_inotify_watches(registry: &mut Registry, watches: Arc<AtomicUsize>) {
    registry.register_collector(Box::new(InotifyWatches { watches }));
}

/// Registers `mountlag_pem_cache_hits_total` and `mountlag_pem_cache_misses_total`: the
/// counters are the cache's own, read on each scrape, so the reload path counts nothing extra.
pub fn register_pem_cache(registry: &mut Registry, cache: SharedPemCache) {
    registry.register_collector(Box::new(PemCacheCounters { cache }));
}

#[derive(Debug)]
struct PemCacheCounters {
    cache: SharedPemCache,
}

impl Collector for PemCacheCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.cache.lock().stats();
        for (name, help, value) in [
            (
                "mountlag_pem_cache_hits",
                "Volume files whose PEM verdict came from the cache (same content already parsed).",
                stats.hits,
            ),
            (
                "mountlag_pem_cache_misses",
                "Volume files looked up in the PEM verdict cache and parsed.",
                stats.misses,
            ),
        ] {
            let counter = ConstCounter::new(value);
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct InotifyWatches {
    watches: Arc<AtomicUsize>,
}

/// Where the kernel says how many inotify watches one user may hold (not namespaced: the host's
/// value, shared by every process of the uid — kubelet and the runtimes too when they run as
/// root).
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// `fs.inotify.max_user_watches`, or `None` when unreadable (the metric is then left out).
fn max_user_watches() -> Option<i64> {
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(std::fs::File::open(MAX_USER_WATCHES).ok()?, 64),
        &mut text,
    )
    .ok()?;
    text.trim().parse().ok()
}

impl Collector for InotifyWatches {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let value = i64::try_from(self.watches.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        let gauge = ConstGauge::new(value);
        let metric = encoder.encode_descriptor(
            "mountlag_inotify_watches",
            "Volume directories watched through the agent's one inotify instance.",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)?;
        if let Some(limit) = max_user_watches() {
            let gauge = ConstGauge::new(limit);
            let metric = encoder.encode_descriptor(
                "mountlag_inotify_max_user_watches",
                "fs.inotify.max_user_watches: inotify watches one user may hold on this node.",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// `Content-Type` of the OpenMetrics text encoding.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format 0.0.4.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Encodes the registry as the client asked: OpenMetrics when `accept` mentions
/// `application/openmetrics-text`, the Prometheus text format 0.0.4 otherwise.
/// Returns (content type, body).
pub fn encode(
    registry: &Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::with_capacity(8 * 1024);
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        prometheus_client::encoding::text::encode(&mut body, registry)?;
        Ok((OPENMETRICS_CONTENT_TYPE, body))
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut body, registry)?;
        Ok((PROMETHEUS_TEXT_CONTENT_TYPE, body))
    }
}

/// The standard `process_*` metrics of the Prometheus client library guidelines, read from
/// `/proc/self` on each scrape. A file that cannot be read leaves its metric out of that scrape.
#[derive(Debug)]
pub struct ProcessCollector {
    proc_self: PathBuf,
    proc_stat: PathBuf,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self {
            proc_self: PathBuf::from("/proc/self"),
            proc_stat: PathBuf::from("/proc/stat"),
        }
    }
}

/// Linux reports `/proc/<pid>/stat` times in USER_HZ ticks, 100 per second on every
/// architecture Kubernetes runs on (the Prometheus Go client assumes the same).
const USER_HZ: f64 = 100.0;

/// Fields of `/proc/self/stat` the collector uses.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    start_ticks: u64,
    virtual_bytes: u64,
}

/// Parses `/proc/<pid>/stat`; the command name may contain spaces and parentheses.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state) of proc(5): field N is `fields[N - 3]`.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let utime = field(14)?;
    let stime = field(15)?;
    Some(ProcStat {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
fn parse_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// The soft `Max open files` limit of `/proc/<pid>/limits` (`None` when unlimited).
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

impl ProcessCollector {
    fn read(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.proc_self.join(name)).ok()
    }

    fn open_fds(&self) -> Option<u64> {
        let entries = std::fs::read_dir(self.proc_self.join("fd")).ok()?;
        Some(entries.count() as u64)
    }
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, unit, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stat = self.read("stat").and_then(|s| parse_stat(&s));
        if let Some(stat) = stat {
            let counter = ConstCounter::new(stat.cpu_seconds);
            let metric = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(metric)?;
            encode_gauge(
                &mut encoder,
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(&Unit::Bytes),
                stat.virtual_bytes as f64,
            )?;
            let boot = std::fs::read_to_string(&self.proc_stat)
                .ok()
                .and_then(|s| parse_boot_time(&s));
            if let Some(boot) = boot {
                encode_gauge(
                    &mut encoder,
                    "process_start_time",
                    "Start time of the process since unix epoch in seconds.",
                    Some(&Unit::Seconds),
                    boot as f64 + stat.start_ticks as f64 / USER_HZ,
                )?;
            }
        }
        if let Some(rss) = self.read("status").and_then(|s| parse_rss_bytes(&s)) {
            encode_gauge(
                &mut encoder,
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(&Unit::Bytes),
                rss as f64,
            )?;
        }
        if let Some(fds) = self.open_fds() {
            encode_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                fds as f64,
            )?;
        }
        if let Some(max) = self.read("limits").and_then(|s| parse_max_fds(&s)) {
            encode_gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::reconcile::MountState;

    #[test]
    fn stat_is_parsed_around_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (mount lag) (x)) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 130 0 0 20 0 3 0 98765 123456789 2345 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0";
        let parsed = parse_stat(stat).unwrap();
        assert_eq!(parsed.cpu_seconds, 3.8);
        assert_eq!(parsed.start_ticks, 98765);
        assert_eq!(parsed.virtual_bytes, 123_456_789);
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_limits_and_boot_time_are_parsed() {
        let status = "Name:\tmountlag\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_bytes(status), Some(5120 * 1024));
        assert_eq!(parse_rss_bytes("Name: x\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(1_048_576));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    fn registry() -> (Registry, AgentMetrics, Arc<AtomicUsize>) {
        let mut registry = Registry::default();
        let metrics = AgentMetrics::register(&mut registry);
        let watches = Arc::new(AtomicUsize::new(0));
        register_inotify_watches(&mut registry, Arc::clone(&watches));
        (registry, metrics, watches)
    }

    #[test]
    fn the_pem_cache_counters_are_read_from_the_cache_at_scrape_time() {
        let mut registry = Registry::default();
        let cache = SharedPemCache::default();
        register_pem_cache(&mut registry, cache.clone());
        let digest = mountlag_core::cert::ContentDigest::of(b"x");
        let _ = cache.lock().get(&digest);
        cache.lock().insert(digest, Default::default());
        let _ = cache.lock().get(&digest);
        let _ = cache.lock().get(&digest);
        let (_, text) = encode(&registry, None).unwrap();
        assert!(
            text.contains("# TYPE mountlag_pem_cache_hits_total counter\n"),
            "{text}"
        );
        assert!(text.contains("mountlag_pem_cache_hits_total 2\n"), "{text}");
        assert!(
            text.contains("mountlag_pem_cache_misses_total 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_prometheus_text_has_every_state_build_info_process_metrics_and_watches() {
        let (registry, metrics, watches) = registry();
        metrics.set_mounts("stuck", 2);
        watches.store(7, Ordering::Relaxed);
        let (content_type, text) = encode(&registry, None).unwrap();
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        for state in MountState::ALL {
            assert!(
                text.contains(&format!("mountlag_mounts{{state=\"{}\"}} ", state.label())),
                "{}: {text}",
                state.label()
            );
        }
        assert!(
            text.contains("mountlag_mounts{state=\"stuck\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mountlag_build_info gauge\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "mountlag_build_info{{version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(text.contains("mountlag_inotify_watches 7\n"), "{text}");
        for name in [
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_virtual_memory_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
            "# TYPE process_open_fds gauge",
        ] {
            assert!(text.contains(name), "{name}: {text}");
        }
        assert!(!text.contains("# EOF"), "{text}");
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap();
        assert!(rss.trim().parse::<f64>().unwrap() > 1024.0 * 1024.0);
    }

    #[test]
    fn openmetrics_is_served_when_asked_for() {
        let (registry, _, _) = registry();
        let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                      version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (content_type, text) = encode(&registry, Some(accept)).unwrap();
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE mountlag_build info\n"), "{text}");
        let (plain, _) = encode(&registry, Some("text/plain")).unwrap();
        assert_eq!(plain, PROMETHEUS_TEXT_CONTENT_TYPE);
    }

    #[test]
    fn a_missing_proc_leaves_the_process_metrics_out() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector {
            proc_self: PathBuf::from("/nonexistent/self"),
            proc_stat: PathBuf::from("/nonexistent/stat"),
        }));
        let (_, text) = encode(&registry, None).unwrap();
        assert_eq!(text, "");
    }
}
