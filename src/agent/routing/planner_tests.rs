//! The planner alone: inputs and made-up instants in, actions out (no kernel, no sleeps).

use super::*;

fn net(text: &str) -> IpNetwork {
    text.parse().unwrap()
}

fn blocks(list: &[&str]) -> BTreeSet<IpNetwork> {
    list.iter().map(|b| net(b)).collect()
}

const FULL: Work = Work::FullResync {
    allow_delete_learned: false,
};
const FULL_DELETING: Work = Work::FullResync {
    allow_delete_learned: true,
};

fn resynced(fix: Vec<IpNetwork>) -> Input {
    Input::Applied(Outcome::Resync {
        took: Duration::from_millis(10),
        fix: Some(fix),
    })
}

/// A planner that has seen both views at `t0` and finished its first full resync.
fn settled_in(t0: Instant) -> RoutePlanner {
    let mut planner = RoutePlanner::new();
    planner.on(t0, Input::LocalBlocks(blocks(&["10.1.0.0/26"])));
    planner.on(t0, Input::Encap(EncapView::default()));
    assert_eq!(planner.next(t0, false), Some(FULL));
    planner.on(t0, resynced(Vec::new()));
    planner
}

#[test]
fn nothing_is_planned_before_the_first_datastore_read_and_tunnel_pass() {
    let t0 = Instant::now();
    let mut planner = RoutePlanner::new();
    planner.on(t0, Input::Changed(vec![net("10.2.0.0/26")]));
    planner.on(t0, Input::MonitorLost);
    assert_eq!(planner.next(t0, false), None, "no view at all");
    planner.on(t0, Input::Encap(EncapView::default()));
    assert_eq!(
        planner.next(t0, false),
        None,
        "tunnels known, datastore not read"
    );
    assert!(
        !planner.awaiting_peers(t0),
        "no speaker question before either"
    );

    let mut planner = RoutePlanner::new();
    planner.on(t0, Input::LocalBlocks(BTreeSet::new()));
    assert_eq!(
        planner.next(t0, false),
        None,
        "datastore read, tunnels not known"
    );
    planner.on(t0, Input::Encap(EncapView::default()));
    assert!(planner.ready());
    assert_eq!(
        planner.next(t0, false),
        Some(FULL),
        "both known: the first resync"
    );
}

#[test]
fn learned_routes_may_be_deleted_only_once_peers_settled() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    assert!(planner.awaiting_peers(t0));
    planner.on(t0, Input::MonitorLost);
    assert_eq!(planner.next(t0, false), Some(FULL), "learned routes kept");
    planner.on(t0, resynced(Vec::new()));
    assert_eq!(planner.next(t0, false), None);

    planner.on(t0, Input::PeersSettled);
    assert!(!planner.awaiting_peers(t0));
    assert_eq!(
        planner.next(t0, false),
        Some(FULL_DELETING),
        "every peer sent End-of-RIB: a resync that may delete them, at once"
    );
}

#[test]
fn learned_routes_may_be_deleted_after_the_grace_even_without_end_of_rib() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    let before = t0 + DELETE_GRACE_MAX;
    assert!(planner.awaiting_peers(before));
    assert_eq!(planner.next(before, false), None);
    let after = t0 + DELETE_GRACE_MAX + Duration::from_secs(1);
    assert!(!planner.awaiting_peers(after));
    assert_eq!(planner.next(after, false), Some(FULL_DELETING));
}

#[test]
fn an_unchanged_datastore_view_plans_nothing() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    // During an outage the follower keeps the last state: the same blocks, again and again.
    for second in 1..5 {
        let now = t0 + Duration::from_secs(second);
        planner.on(now, Input::LocalBlocks(blocks(&["10.1.0.0/26"])));
        planner.on(now, Input::Encap(EncapView::default()));
        assert_eq!(planner.next(now, false), None);
    }
    // A real change is a full resync.
    let now = t0 + Duration::from_secs(6);
    planner.on(now, Input::LocalBlocks(blocks(&["10.1.0.64/26"])));
    assert_eq!(planner.next(now, false), Some(FULL));
    let view = planner.view().unwrap();
    assert_eq!(*view.local, blocks(&["10.1.0.64/26"]));
}

#[test]
fn changes_are_applied_in_sorted_chunks() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    let prefixes: Vec<IpNetwork> = (0..APPLY_CHUNK as u32 + 5)
        .rev()
        .map(|i| IpNetwork::new(std::net::Ipv4Addr::from(0x0a00_0000 + (i << 8)).into(), 24))
        .map(Result::unwrap)
        .collect();
    planner.on(t0, Input::Changed(prefixes.clone()));
    planner.on(t0, Input::Changed(vec![prefixes[0]])); // a duplicate
    assert!(!planner.wants_changes(), "a full chunk is pending");
    let Some(Work::ApplyPrefixes(first)) = planner.next(t0, false) else {
        panic!("expected a chunk");
    };
    assert_eq!(first.len(), APPLY_CHUNK);
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "sorted, no duplicate"
    );
    assert!(planner.busy(false), "the rest is pending");
    planner.on(t0, Input::Applied(Outcome::Prefixes { ok: true }));
    let Some(Work::ApplyPrefixes(rest)) = planner.next(t0, false) else {
        panic!("expected the rest");
    };
    assert_eq!(rest.len(), 5);
    planner.on(t0, Input::Applied(Outcome::Prefixes { ok: true }));
    assert!(!planner.busy(false));
    assert_eq!(planner.next(t0, false), None);
}

#[test]
fn a_due_full_resync_waits_for_the_backlog_but_not_forever() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    planner.on(t0, Input::MonitorLost);
    planner.on(t0, Input::Changed(vec![net("10.2.0.0/26")]));
    assert!(matches!(
        planner.next(t0, false),
        Some(Work::ApplyPrefixes(_))
    ));
    planner.on(t0, Input::Applied(Outcome::Prefixes { ok: true }));
    // Nothing pending, but the speaker has more queued: wait for it.
    assert!(planner.busy(true));
    assert_eq!(planner.next(t0, true), None);
    assert_eq!(planner.next(t0 + FULL_WAIT_MAX, true), None);
    let late = t0 + FULL_WAIT_MAX + Duration::from_secs(1);
    assert_eq!(
        planner.next(late, true),
        Some(FULL),
        "endless churn cannot starve it"
    );

    // Drained: at once.
    let mut planner = settled_in(t0);
    planner.on(t0, Input::MonitorLost);
    assert_eq!(planner.next(t0, false), Some(FULL));
}

#[test]
fn periodic_resyncs_stretch_with_the_scan_time() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    planner.on(t0, Input::Tick);
    assert_eq!(planner.next(t0, false), None);
    let t1 = t0 + RESYNC_EVERY;
    planner.on(t1, Input::Tick);
    assert_eq!(planner.next(t1, false), Some(FULL), "every 10 s");
    // A scan that took 1 s: the next one is due 50 s later, not 10.
    planner.on(
        t1,
        Input::Applied(Outcome::Resync {
            took: Duration::from_secs(1),
            fix: Some(Vec::new()),
        }),
    );
    planner.on(t1 + RESYNC_EVERY * 2, Input::Tick);
    assert_eq!(planner.next(t1 + RESYNC_EVERY * 2, false), None);
    planner.on(t1 + Duration::from_secs(50), Input::Tick);
    assert_eq!(
        planner.next(t1 + Duration::from_secs(50), false),
        Some(FULL)
    );
}

#[test]
fn a_resync_found_routes_are_fixed_then_the_kernel_counts_as_programmed() {
    let t0 = Instant::now();
    let mut planner = RoutePlanner::new();
    planner.on(t0, Input::LocalBlocks(BTreeSet::new()));
    planner.on(t0, Input::Encap(EncapView::default()));
    assert_eq!(planner.next(t0, false), Some(FULL));
    let actions = planner.on(t0, resynced(vec![net("10.2.0.0/26")]));
    assert!(actions.is_empty(), "not programmed while fixes are pending");
    assert_eq!(
        planner.next(t0, false),
        Some(Work::ApplyPrefixes(vec![net("10.2.0.0/26")]))
    );
    let actions = planner.on(t0, Input::Applied(Outcome::Prefixes { ok: true }));
    assert_eq!(actions, vec![Action::MarkProgrammed]);
    planner.on(t0, Input::RouteDeleted(net("10.2.0.0/26")));
    assert_eq!(
        planner.next(t0, false),
        Some(Work::ApplyPrefixes(vec![net("10.2.0.0/26")])),
        "a deleted route is re-checked alone"
    );
    let actions = planner.on(t0, Input::Applied(Outcome::Prefixes { ok: true }));
    assert!(actions.is_empty(), "said once");
}

#[test]
fn a_failed_update_pauses_and_asks_for_a_full_resync() {
    let t0 = Instant::now();
    let mut planner = settled_in(t0);
    planner.on(t0, Input::Changed(vec![net("10.2.0.0/26")]));
    assert!(planner.next(t0, false).is_some());
    let actions = planner.on(t0, Input::Applied(Outcome::Prefixes { ok: false }));
    assert_eq!(actions, vec![Action::RetryAfter(RETRY_AFTER)]);
    assert_eq!(planner.next(t0, false), Some(FULL));
    let failed = Input::Applied(Outcome::Resync {
        took: Duration::from_millis(1),
        fix: None,
    });
    assert_eq!(
        planner.on(t0, failed),
        vec![Action::RetryAfter(RETRY_AFTER)]
    );
    assert_eq!(planner.next(t0, false), Some(FULL), "still due");
}
