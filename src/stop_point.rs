//! Named stop points for crash tests: a process whose environment sets `var` to a point's name
//! stops itself (SIGSTOP) when it gets there, so a test can SIGKILL it at exactly that step
//! (it waits for the process state `T` in `/proc/<pid>/stat`, not for a time). Unset — always,
//! outside tests — a stop point costs one environment lookup.
//!
//! Points: routed-cni (`ROUTED_CNI_STOP_AT`): `allocated`, `wired` (`cni::plugin`); the agent
//! (`ROUTED_STOP_AT`): `allocation-committed` (`agent::server`).

/// Stops the process when `var` names `point`; returns once it is continued (SIGCONT).
pub fn reached(var: &str, point: &str) {
    if std::env::var(var).is_ok_and(|v| v == point) {
        eprintln!("stop point {point} reached (pid {})", std::process::id());
        // SAFETY: raise(3) with a valid signal number has no memory-safety preconditions.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
