//! Connection slots of the admin server, shared so that an idle connection never keeps a new
//! one out.
//!
//! The server used to leave new connections in the kernel's accept backlog while its slots were
//! taken: 300 clients that connect and send nothing kept kubelet's probes waiting for longer
//! than their 1 s timeout, and kubelet restarts an agent whose liveness probe fails. Now every
//! connection is accepted at once, and when it would exceed a limit an *idle* connection — one
//! with no request in progress: its request head has not arrived yet, or it waits between
//! keep-alive requests — is closed to make room:
//!
//! - a peer (IP address) that holds [`Slots`]' per-peer maximum loses its own longest-idle
//!   connection, so one client can never push out anybody else;
//! - a server that holds its total maximum closes the longest-idle connection of the peer that
//!   holds the most connections, so many clients push out each other before they push out a
//!   peer holding one or two (kubelet probes over one connection at a time, Prometheus scrapes
//!   over one).
//!
//! A connection whose request is being answered is never closed to make room, and neither is
//! one that was accepted but not yet read from (its request may be waiting in the socket
//! buffer: a probe sends it right after connecting). When no idle connection can go, the new
//! one is closed instead; every slot is then busy, which lasts milliseconds.
//!
//! [`admit`] is the decision, a pure function of the open connections; [`Slots`] keeps the
//! table and closes the connections it picks.

use std::cmp::Reverse;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::oneshot;

/// What [`admit`] decided for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot is free.
    Admit,
    /// Close this idle connection (by id), then admit.
    Evict(u64),
    /// Every connection that could make room is busy answering: close the new one.
    Refuse,
}

/// One open connection, as [`admit`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub id: u64,
    pub peer: IpAddr,
    /// Since when (a monotonic tick; smaller is older) it has been waiting for a request;
    /// `None` while a request is being answered or before the connection was first read.
    pub idle_since: Option<u64>,
}

/// Decides how a new connection from `peer` gets a slot among the `open` ones (see the module
/// docs). Limits below 1 count as 1.
pub fn admit(open: &[Open], peer: IpAddr, max_total: usize, max_per_peer: usize) -> Admission {
    let same_peer = || open.iter().filter(|c| c.peer == peer);
    if same_peer().count() >= max_per_peer.max(1) {
        // Oldest idle first; equal ticks go to the older connection (smaller id).
        return same_peer()
            .filter_map(|c| c.idle_since.map(|since| (Reverse(since), Reverse(c.id))))
            .max()
            .map_or(Admission::Refuse, |(_, Reverse(id))| Admission::Evict(id));
    }
    if open.len() >= max_total.max(1) {
        let mut held: HashMap<IpAddr, usize> = HashMap::new();
        for c in open {
            *held.entry(c.peer).or_default() += 1;
        }
        return open
            .iter()
            .filter_map(|c| {
                let since = c.idle_since?;
                let peer_holds = held.get(&c.peer).copied().unwrap_or(0);
                Some((peer_holds, Reverse(since), Reverse(c.id)))
            })
            .max()
            .map_or(Admission::Refuse, |(_, _, Reverse(id))| {
                Admission::Evict(id)
            });
    }
    Admission::Admit
}

/// `idle_since` value of a connection whose request is being answered.
const BUSY: u64 = u64::MAX;
/// `idle_since` value of a connection accepted but not yet found waiting for data.
const FRESH: u64 = u64::MAX - 1;

/// The open connections of one server and their limits.
#[derive(Debug)]
pub struct Slots {
    max_total: usize,
    max_per_peer: usize,
    origin: Instant,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    idle_since: Arc<AtomicU64>,
    evict: oneshot::Sender<()>,
}

impl Slots {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total: max_total.max(1),
            max_per_peer: max_per_peer.max(1),
            origin: Instant::now(),
            table: Mutex::new(Table::default()),
        })
    }

    /// A slot for a new connection from `peer`, after closing an idle connection when a limit
    /// is reached; `None` when the new connection must be closed instead.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        // An IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d: the same peer.
        let peer = peer.to_canonical();
        let mut table = self.lock();
        let open: Vec<Open> = table
            .open
            .iter()
            .map(|(id, entry)| {
                let since = entry.idle_since.load(Ordering::Relaxed);
                Open {
                    id: *id,
                    peer: entry.peer,
                    idle_since: (since < FRESH).then_some(since),
                }
            })
            .collect();
        match admit(&open, peer, self.max_total, self.max_per_peer) {
            Admission::Admit => {}
            Admission::Refuse => {
                tracing::debug!(%peer, "admin endpoint: every slot is busy; closing the new connection");
                return None;
            }
            Admission::Evict(id) => {
                if let Some(victim) = table.open.remove(&id) {
                    tracing::debug!(
                        %peer,
                        closed_peer = %victim.peer,
                        "admin endpoint: closing an idle connection to make room"
                    );
                    // The connection task may have ended already; nothing to close then.
                    let _ = victim.evict.send(());
                }
            }
        }
        let id = table.next_id;
        table.next_id += 1;
        let idle_since = Arc::new(AtomicU64::new(FRESH));
        let (evict, evicted) = oneshot::channel();
        table.open.insert(
            id,
            Entry {
                peer,
                idle_since: Arc::clone(&idle_since),
                evict,
            },
        );
        Some(Slot {
            slots: Arc::clone(self),
            id,
            activity: Activity {
                idle_since,
                origin: self.origin,
            },
            evicted,
        })
    }

    /// Connections holding a slot.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // A poisoned lock only means a panic elsewhere mid-update; the table stays usable.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Nanoseconds since `origin`, below [`FRESH`].
fn tick(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_nanos())
        .unwrap_or(FRESH - 1)
        .min(FRESH - 1)
}

/// A connection's slot: frees itself when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    activity: Activity,
    evicted: oneshot::Receiver<()>,
}

impl Slot {
    /// Marks requests in progress, for the service of this connection.
    pub fn activity(&self) -> Activity {
        self.activity.clone()
    }

    /// Resolves when the server closes this connection to make room for a new one. Await it
    /// at most once to completion (a `select!` that then drops the connection).
    pub async fn evicted(&mut self) {
        if (&mut self.evicted).await.is_err() {
            // The table was dropped without choosing this connection: never evicted.
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
    }
}

/// Whether a connection has a request in progress (it cannot be closed to make room then).
#[derive(Debug, Clone)]
pub struct Activity {
    idle_since: Arc<AtomicU64>,
    origin: Instant,
}

impl Activity {
    /// The connection found its socket empty (a read would block): from now on it is idle and
    /// may be closed to make room, until a request arrives. Only the first call counts.
    pub fn waiting(&self) {
        let _ = self.idle_since.compare_exchange(
            FRESH,
            tick(self.origin),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// A request is being answered until the returned guard is dropped.
    pub fn begin(&self) -> Busy {
        self.idle_since.store(BUSY, Ordering::Relaxed);
        Busy {
            activity: self.clone(),
        }
    }
}

/// See [`Activity::begin`].
#[derive(Debug)]
pub struct Busy {
    activity: Activity,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity
            .idle_since
            .store(tick(self.activity.origin), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn idle(id: u64, peer: u8, since: u64) -> Open {
        Open {
            id,
            peer: ip(peer),
            idle_since: Some(since),
        }
    }

    fn busy(id: u64, peer: u8) -> Open {
        Open {
            id,
            peer: ip(peer),
            idle_since: None,
        }
    }

    #[test]
    fn under_both_limits_a_connection_is_admitted() {
        assert_eq!(admit(&[], ip(1), 4, 2), Admission::Admit);
        let open = [idle(1, 1, 10), busy(2, 2)];
        assert_eq!(admit(&open, ip(1), 4, 2), Admission::Admit);
    }

    #[test]
    fn a_peer_at_its_limit_loses_its_own_longest_idle_connection_never_another_peers() {
        let open = [
            idle(1, 2, 5), // another peer's, older than any of peer 1's
            idle(2, 1, 30),
            idle(3, 1, 20),
            busy(4, 1),
        ];
        assert_eq!(admit(&open, ip(1), 64, 3), Admission::Evict(3));
        // Equal idle ticks: the older connection goes.
        let tied = [idle(8, 1, 7), idle(5, 1, 7)];
        assert_eq!(admit(&tied, ip(1), 64, 2), Admission::Evict(5));
    }

    #[test]
    fn a_peer_at_its_limit_whose_connections_are_all_busy_is_refused() {
        let open = [busy(1, 1), busy(2, 1), idle(3, 2, 0)];
        assert_eq!(admit(&open, ip(1), 64, 2), Admission::Refuse);
    }

    #[test]
    fn a_full_server_closes_the_longest_idle_connection_of_the_peer_holding_most() {
        // Peer 9 (kubelet, say) holds one old idle connection; peer 2 holds three.
        let open = [
            idle(1, 9, 1),
            idle(2, 2, 50),
            idle(3, 2, 40),
            busy(4, 2),
            idle(5, 3, 2),
            idle(6, 3, 3),
        ];
        assert_eq!(admit(&open, ip(7), 6, 8), Admission::Evict(3));
        // Every peer holds one: the longest idle goes, whoever it is.
        let spread = [idle(1, 1, 30), idle(2, 2, 10), idle(3, 3, 20)];
        assert_eq!(admit(&spread, ip(4), 3, 8), Admission::Evict(2));
    }

    #[test]
    fn a_full_server_whose_connections_are_all_busy_refuses() {
        let open = [busy(1, 1), busy(2, 2), busy(3, 3)];
        assert_eq!(admit(&open, ip(4), 3, 8), Admission::Refuse);
        assert_eq!(admit(&open, ip(1), 3, 8), Admission::Refuse);
    }

    #[test]
    fn limits_below_one_count_as_one() {
        assert_eq!(admit(&[], ip(1), 0, 0), Admission::Admit);
        assert_eq!(admit(&[idle(1, 1, 0)], ip(1), 0, 0), Admission::Evict(1));
    }

    /// A slot whose connection has been read from and found waiting.
    fn waiting(slots: &Arc<Slots>, peer: IpAddr) -> Option<Slot> {
        let slot = slots.admit(peer)?;
        slot.activity().waiting();
        Some(slot)
    }

    #[tokio::test]
    async fn the_evicted_slot_hears_it_and_dropped_slots_free_theirs() {
        let slots = Slots::new(8, 2);
        let mut first = waiting(&slots, ip(1)).unwrap();
        let second = waiting(&slots, ip(1)).unwrap();
        assert_eq!(slots.open(), 2);
        let third = slots.admit(ip(1)).unwrap();
        assert_eq!(slots.open(), 2);
        tokio::time::timeout(std::time::Duration::from_secs(1), first.evicted())
            .await
            .unwrap();
        drop(first);
        drop(second);
        assert_eq!(slots.open(), 1);
        drop(third);
        assert_eq!(slots.open(), 0);
    }

    #[tokio::test]
    async fn a_connection_answering_a_request_is_not_closed_to_make_room() {
        let slots = Slots::new(8, 1);
        let answering = waiting(&slots, ip(1)).unwrap();
        let busy = answering.activity().begin();
        assert!(slots.admit(ip(1)).is_none(), "refused while busy");
        assert_eq!(slots.open(), 1);
        drop(busy);
        assert!(slots.admit(ip(1)).is_some(), "idle again: it makes room");
    }

    #[test]
    fn a_connection_not_yet_read_from_is_not_closed_to_make_room() {
        let slots = Slots::new(1, 8);
        let fresh = slots.admit(ip(1)).unwrap();
        assert!(
            slots.admit(ip(2)).is_none(),
            "its request may be in the buffer"
        );
        fresh.activity().waiting();
        assert!(slots.admit(ip(2)).is_some(), "found waiting: it makes room");
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_the_same_peer() {
        let slots = Slots::new(8, 1);
        let v4 = waiting(&slots, ip(1)).unwrap();
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        let _new = slots.admit(mapped).unwrap();
        assert_eq!(
            slots.open(),
            1,
            "the mapped address counted against 10.0.0.1"
        );
        drop(v4);
        let _other = slots.admit(IpAddr::V6(Ipv6Addr::LOCALHOST)).unwrap();
        assert_eq!(slots.open(), 2);
    }
}
