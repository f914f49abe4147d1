//! The soak of `testbed chaos soak`, small: 4 pods (2 nginx, 2 HAProxy), 40 rotations, two of
//! them under TLS load with new and keep-alive connections. The full run (100 pods, 10,000
//! rotations) and its figures are in docs/reliability.md.

#![allow(clippy::unwrap_used)]

use mountlag_testbed::chaos::{SoakOptions, soak};
use mountlag_testbed::controllers::{self, ControllerKind};
use mountlag_testbed::real;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_across_pods_under_load_fail_no_request_and_reload_once_per_version() {
    if !(real::require("root + tmpfs", real::can_mount())
        && real::require("nginx", controllers::available(ControllerKind::Nginx))
        && real::require("haproxy", controllers::available(ControllerKind::Haproxy)))
    {
        return;
    }
    let options = SoakOptions {
        pods: 4,
        rotations: 40,
        loaded_pods: 2,
        ..SoakOptions::default()
    };
    let report = soak(&options).await.unwrap();
    eprintln!("{report}");
    assert_eq!(report.rotations, 40);
    assert_eq!(report.failed_requests(), 0, "{report}");
    for (pod, load) in &report.load {
        assert!(load.requests > 50, "{pod}: the load ran: {load}");
        assert!(
            load.keepalive_requests > 10,
            "{pod}: keep-alive requests ran: {load}"
        );
    }
    assert!(
        report.max_reloads_per_pod <= report.rounds,
        "at most one reload per version: {report}"
    );
    assert!(report.warnings.is_empty(), "{report}");
}
