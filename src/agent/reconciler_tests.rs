//! The driver with a fake reconciler, on paused tokio time.

use super::*;
use std::sync::atomic::AtomicUsize;

/// One apply as the fake saw it: when (since the start), what it wanted, what woke it.
type Seen = (Duration, u32, Wake);

struct Fake {
    started: Instant,
    seen: Arc<Mutex<Vec<Seen>>>,
    events: Arc<AtomicUsize>,
    /// Applies that fail before one succeeds.
    failures_left: usize,
    /// Applies that report more work.
    more_left: usize,
    /// Events it takes between two passes.
    room: usize,
    taken: usize,
}

#[async_trait]
impl Reconciler for Fake {
    type Input = u32;
    type Desired = u32;
    type Event = ();

    fn name(&self) -> &'static str {
        "fake"
    }

    fn desired(&self, input: &u32) -> u32 {
        *input
    }

    fn on_event(&mut self, _event: ()) {
        self.events.fetch_add(1, Ordering::Relaxed);
        self.taken += 1;
    }

    fn wants_events(&self) -> bool {
        self.taken < self.room
    }

    async fn apply(&mut self, desired: u32, wake: Wake) -> anyhow::Result<Applied> {
        let at = Instant::now() - self.started;
        self.seen.lock().unwrap().push((at, desired, wake));
        self.taken = 0;
        if self.failures_left > 0 {
            self.failures_left -= 1;
            anyhow::bail!("kernel said no");
        }
        let more = self.more_left > 0;
        self.more_left = self.more_left.saturating_sub(1);
        Ok(Applied { changes: 1, more })
    }
}

struct Harness {
    input: watch::Sender<Option<u32>>,
    kernel: mpsc::Sender<()>,
    seen: Arc<Mutex<Vec<Seen>>>,
    events: Arc<AtomicUsize>,
    stats: Arc<ReconcilerStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Harness {
    fn start(input: Option<u32>, resync_every: Duration, failures: usize, more: usize) -> Harness {
        let triggers = |kernel| Triggers::every(resync_every).with_kernel(kernel);
        Harness::start_with(input, triggers, failures, more, usize::MAX)
    }

    fn start_with(
        input: Option<u32>,
        triggers: impl FnOnce(mpsc::Receiver<()>) -> Triggers<()>,
        failures: usize,
        more: usize,
        room: usize,
    ) -> Harness {
        let (input_tx, input_rx) = watch::channel(input);
        let (kernel_tx, kernel_rx) = mpsc::channel(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(ReconcilerStats::default());
        let fake = Fake {
            started: Instant::now(),
            seen: seen.clone(),
            events: events.clone(),
            failures_left: failures,
            more_left: more,
            room,
            taken: 0,
        };
        let triggers = triggers(kernel_rx);
        let task = tokio::spawn(run(fake, input_rx, triggers, stats.clone()));
        Harness {
            input: input_tx,
            kernel: kernel_tx,
            seen,
            events,
            stats,
            task,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn wake(input: bool, kernel: bool, timer: bool, retry: bool) -> Wake {
    Wake {
        input,
        kernel,
        timer,
        retry,
        backlog: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_is_retried_with_doubling_back_off() {
    let h = Harness::start(Some(7), secs(60), 2, 0);
    tokio::time::sleep(secs(10)).await;
    let retry = wake(false, false, false, true);
    assert_eq!(
        h.seen(),
        vec![
            (secs(0), 7, wake(true, false, false, false)),
            (secs(1), 7, retry),
            (secs(3), 7, retry),
        ]
    );
    let stats = h.stats.snapshot();
    assert_eq!(
        (stats.passes, stats.failures, stats.consecutive_failures),
        (3, 2, 0)
    );
    assert_eq!(stats.last_error.as_deref(), Some("kernel said no"));
}

#[tokio::test(start_paused = true)]
async fn queued_wake_ups_coalesce_into_one_pass() {
    let h = Harness::start(Some(0), secs(60), 0, 0);
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(h.seen().len(), 1);
    for n in 1..=3 {
        h.input.send_replace(Some(n));
        h.kernel.try_send(()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    let seen = h.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[1].1, seen[1].2), (3, wake(true, true, false, false)));
    assert_eq!(h.events.load(Ordering::Relaxed), 3);
    let stats = h.stats.snapshot();
    assert_eq!(
        (stats.passes, stats.passes_changed, stats.changes),
        (2, 2, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn the_timer_resyncs_every_period() {
    let h = Harness::start(Some(1), secs(10), 0, 0);
    tokio::time::sleep(secs(35)).await;
    let timer = wake(false, false, true, false);
    assert_eq!(
        h.seen(),
        vec![
            (secs(0), 1, wake(true, false, false, false)),
            (secs(10), 1, timer),
            (secs(20), 1, timer),
            (secs(30), 1, timer),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_runs_before_the_first_input() {
    let h = Harness::start(None, secs(10), 0, 0);
    h.kernel.try_send(()).unwrap();
    tokio::time::sleep(secs(25)).await;
    assert_eq!(h.seen(), vec![]);
    assert_eq!(h.stats.snapshot().passes, 0);
    h.input.send_replace(Some(4));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let seen = h.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1, 4);
    assert!(seen[0].2.input);
}

#[tokio::test(start_paused = true)]
async fn more_work_runs_the_next_pass_at_once() {
    let h = Harness::start(Some(2), secs(60), 0, 2);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let seen = h.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|(at, _, _)| *at == secs(0)), "{seen:?}");
}

#[tokio::test(start_paused = true)]
async fn the_driver_ends_with_its_input() {
    let h = Harness::start(Some(2), secs(60), 0, 0);
    drop(h.input);
    tokio::time::timeout(secs(1), h.task)
        .await
        .expect("the driver ended")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn events_the_reconciler_does_not_want_yet_stay_queued_as_backlog() {
    let triggers = |kernel| Triggers::every(secs(60)).with_kernel(kernel);
    let h = Harness::start_with(None, triggers, 0, 0, 2);
    for _ in 0..5 {
        h.kernel.try_send(()).unwrap();
    }
    h.input.send_replace(Some(1));
    tokio::time::sleep(Duration::from_millis(1)).await;
    let backlog = |input, backlog| Wake {
        backlog,
        ..wake(input, true, false, false)
    };
    let seen: Vec<Wake> = h.seen().into_iter().map(|(_, _, wake)| wake).collect();
    assert_eq!(
        seen,
        vec![
            backlog(true, true),
            backlog(false, true),
            backlog(false, false)
        ],
        "two events a pass, the rest reported queued"
    );
    assert_eq!(h.events.load(Ordering::Relaxed), 5);
}

#[tokio::test(start_paused = true)]
async fn a_reconciler_that_paces_itself_is_retried_at_once() {
    let triggers = |kernel| {
        Triggers::every(secs(60))
            .retry_at_once()
            .with_kernel(kernel)
    };
    let h = Harness::start_with(Some(3), triggers, 2, 0, usize::MAX);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let retry = wake(false, false, false, true);
    assert_eq!(
        h.seen(),
        vec![
            (secs(0), 3, wake(true, false, false, false)),
            (secs(0), 3, retry),
            (secs(0), 3, retry),
        ]
    );
    assert_eq!(h.stats.snapshot().failures, 2);
}
