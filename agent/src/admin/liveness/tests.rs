//! Tests of [`super`].

use super::*;

// Real time (the liveness clock is std's): margins wide enough that a loaded machine, which
// may not run a task for a few hundred ms, cannot turn an answering loop into a stalled one.
/// `stall_after` of the loops under test.
const STALL: Duration = Duration::from_secs(1);
/// Longer than half of STALL: a loop silent this long gets pinged.
const PING_DUE: Duration = Duration::from_millis(600);
/// Longer than STALL: an unanswered ping this old is a stall.
const PAST_STALL: Duration = Duration::from_millis(1100);

#[tokio::test]
async fn no_loops_is_alive() {
    let liveness = Liveness::new();
    let report = liveness.check().await;
    assert!(report.is_alive());
    assert_eq!(report.body(), "ok\n");
}

#[tokio::test]
async fn an_idle_loop_that_answers_pings_stays_alive() {
    let liveness = Liveness::new();
    let heartbeat = liveness.register("idle", STALL);
    let (_tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                () = heartbeat.pinged() => {}
                msg = rx.recv() => if msg.is_none() { return },
            }
        }
    });
    for _ in 0..3 {
        tokio::time::sleep(PING_DUE).await;
        let report = liveness.check().await;
        assert!(report.is_alive(), "{report:?}");
        assert_eq!(report.body(), "ok: idle\n");
    }
    task.abort();
}

#[tokio::test]
async fn a_wedged_loop_is_named_once_its_ping_is_older_than_stall_after() {
    let liveness = Liveness::new();
    let _wedged = liveness.register("reconcile", STALL);
    let alive = liveness.register("pod_watch", STALL);
    let task = {
        let alive = alive.clone();
        tokio::spawn(async move {
            loop {
                alive.pinged().await;
            }
        })
    };
    // Silent for longer than ping_after: the first check pings, the benefit of the doubt
    // holds until stall_after has passed since that ping.
    tokio::time::sleep(PING_DUE).await;
    let first = liveness.check_with(Duration::from_millis(20)).await;
    assert!(first.is_alive(), "{first:?}");
    tokio::time::sleep(PAST_STALL).await;
    let report = liveness.check_with(Duration::from_millis(20)).await;
    assert_eq!(report.stalled.len(), 1, "{report:?}");
    assert_eq!(report.stalled[0].loop_name, "reconcile");
    assert!(
        report
            .body()
            .starts_with("stalled: reconcile (no sign of life")
    );
    assert!(!report.body().contains("pod_watch ("));
    task.abort();
}

#[tokio::test]
async fn a_beat_answers_the_ping_and_recovers() {
    let liveness = Liveness::new();
    let heartbeat = liveness.register("executor", STALL);
    tokio::time::sleep(PING_DUE).await;
    let _ = liveness.check_with(Duration::from_millis(5)).await;
    tokio::time::sleep(PAST_STALL).await;
    assert!(
        !liveness
            .check_with(Duration::from_millis(5))
            .await
            .is_alive()
    );
    heartbeat.beat();
    assert!(liveness.check().await.is_alive());
}

#[tokio::test]
async fn a_recent_beat_needs_no_ping() {
    let liveness = Liveness::new();
    let heartbeat = liveness.register("busy", Duration::from_secs(10));
    heartbeat.beat();
    let started = Instant::now();
    // Had it pinged, it would wait the full minute for an answer that never comes.
    assert!(
        liveness
            .check_with(Duration::from_secs(60))
            .await
            .is_alive()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "no wait when nobody was pinged"
    );
    assert!(!heartbeat.state.ping_outstanding());
}

#[tokio::test]
async fn answer_pings_while_keeps_a_waiting_loop_alive_and_returns_the_output() {
    let liveness = Liveness::new();
    let heartbeat = liveness.register("watch", STALL);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let waiter = {
        let heartbeat = heartbeat.clone();
        tokio::spawn(async move {
            heartbeat.answer_pings_while(done_rx).await.ok();
            7
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(PING_DUE).await;
        assert!(liveness.check().await.is_alive());
    }
    done_tx.send(()).ok();
    assert_eq!(waiter.await.ok(), Some(7));
}

#[tokio::test]
async fn a_thread_loop_answers_through_its_hook_and_take_ping() {
    let liveness = Liveness::new();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let heartbeat = liveness.register_with_ping_hook("inotify", STALL, move || {
        let _ = tx.send(());
    });
    let thread = std::thread::spawn(move || {
        let mut answered = 0;
        while rx.recv().is_ok() {
            if heartbeat.take_ping() {
                answered += 1;
            }
            if answered == 2 {
                break;
            }
        }
        answered
    });
    for _ in 0..2 {
        tokio::time::sleep(PING_DUE).await;
        assert!(liveness.check().await.is_alive());
    }
    assert_eq!(thread.join().ok(), Some(2));
}

#[tokio::test]
async fn dropping_every_heartbeat_unregisters_the_loop() {
    let liveness = Liveness::new();
    let heartbeat = liveness.register("gone", STALL);
    let clone = heartbeat.clone();
    assert_eq!(liveness.loop_names(), vec!["gone"]);
    drop(heartbeat);
    assert_eq!(liveness.loop_names(), vec!["gone"]);
    drop(clone);
    assert!(liveness.loop_names().is_empty());
    assert!(liveness.check().await.is_alive());
}

#[test]
fn stall_is_not_requested_without_the_test_variable() {
    // The test runner does not set MOUNTLAG_TEST_STALL.
    if std::env::var_os(TEST_STALL_ENV).is_none() {
        assert!(!Liveness::stall_requested("reconcile"));
    }
}
