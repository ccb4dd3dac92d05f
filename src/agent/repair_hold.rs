//! A fault-injection hook for tests and drills: `routed --route-repair-hold PATH`. While
//! PATH exists, the route reconciler does not put back routes of ours that someone deleted
//! from the kernel: neither on the monitor's deletion report nor by the periodic full resync.
//! Routes the speaker changes are still programmed. Once PATH is gone, the deletions seen
//! meanwhile are repaired at once (one full resync). Without the flag nothing is held.
//!
//! It lets a test keep a fault in place long enough to watch `routectl cluster status` name
//! it (tests/cluster_status.rs), then watch the agent's own repair clear it.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

static HOLD: OnceLock<PathBuf> = OnceLock::new();

/// How often a held reconciler looks whether the hold was released.
const POLL: Duration = Duration::from_millis(100);

/// Sets the hold file (once per process; later calls are ignored).
pub fn set(path: PathBuf) {
    let _ = HOLD.set(path);
}

/// True while repair is held (the hold file exists).
pub fn held() -> bool {
    HOLD.get().is_some_and(|path| path.exists())
}

/// Returns once repair is no longer held.
pub async fn released() {
    while held() {
        tokio::time::sleep(POLL).await;
    }
}
