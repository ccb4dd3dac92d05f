//! Network namespace references and running work inside a namespace.
//!
//! A namespace is named by a file: `/proc/<pid>/ns/net` or a bind mount such as
//! `/var/run/netns/<name>` (what `ip netns add` creates, and what the container runtime passes
//! to the CNI plugin as `CNI_NETNS`). [`run_in_netns`] opens that file, starts a dedicated OS
//! thread, moves the thread into the namespace with `setns(CLONE_NEWNET)`, runs the closure and
//! lets the thread exit. The calling thread (and the tokio workers) never change namespace, so
//! nothing leaks into other tasks.
//!
//! Sockets remember the namespace they were created in: a netlink socket opened inside the
//! closure keeps operating on that namespace after it is handed back to the caller. That is how
//! `KernelNetlink::for_netns` gets a handle on a pod's namespace, and how sysctls under
//! `/proc/sys/net` are read and written there (procfs resolves `net/` by the opening thread's
//! namespace).

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::error::{NetlinkError, Result};

/// Where `ip netns add <name>` puts its bind mounts.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// A network namespace, by path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsRef(PathBuf);

impl NetnsRef {
    /// A namespace by any path (`CNI_NETNS`).
    pub fn new(path: impl Into<PathBuf>) -> NetnsRef {
        NetnsRef(path.into())
    }

    /// The namespace of a process: `/proc/<pid>/ns/net`.
    pub fn from_pid(pid: u32) -> NetnsRef {
        NetnsRef(PathBuf::from(format!("/proc/{pid}/ns/net")))
    }

    /// A namespace created by `ip netns add <name>`: `/var/run/netns/<name>`.
    pub fn named(name: &str) -> NetnsRef {
        NetnsRef(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The namespace of the calling thread: `/proc/thread-self/ns/net`.
    pub fn current_thread() -> NetnsRef {
        NetnsRef(PathBuf::from("/proc/thread-self/ns/net"))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Opens the namespace file: [`NetlinkError::NetnsNotFound`] when the path does not exist.
    pub fn open(&self) -> Result<File> {
        File::open(&self.0).map_err(|source| self.open_error(source))
    }

    fn open_error(&self, source: io::Error) -> NetlinkError {
        if source.kind() == io::ErrorKind::NotFound {
            NetlinkError::NetnsNotFound(self.0.clone())
        } else {
            NetlinkError::NetnsEnter {
                path: self.0.clone(),
                source,
            }
        }
    }
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// Runs `work` on a fresh OS thread that has entered `netns`, and returns its result.
///
/// Blocks the caller until `work` returns; from async code use [`run_in_netns_async`]. Errors:
/// [`NetlinkError::NetnsNotFound`] when the path does not exist, [`NetlinkError::NetnsEnter`]
/// when it is not a namespace or cannot be entered, or when `work` panics.
pub fn run_in_netns<F, T>(netns: &NetnsRef, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let file = netns.open()?;
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("routed-netns".into())
            .spawn_scoped(scope, move || {
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                // The thread is in the namespace for the rest of its life; it exits after `work`.
                Ok::<T, io::Error>(work())
            })
            .map_err(|source| NetlinkError::NetnsEnter {
                path: netns.path().to_path_buf(),
                source,
            })?;
        match thread.join() {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(NetlinkError::NetnsEnter {
                path: netns.path().to_path_buf(),
                source,
            }),
            Err(_) => Err(NetlinkError::NetnsEnter {
                path: netns.path().to_path_buf(),
                source: io::Error::other("work inside the namespace panicked"),
            }),
        }
    })
}

/// [`run_in_netns`] from async code: the blocking part runs on tokio's blocking pool.
pub async fn run_in_netns_async<F, T>(netns: &NetnsRef, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let netns_owned = netns.clone();
    tokio::task::spawn_blocking(move || run_in_netns(&netns_owned, work))
        .await
        .map_err(|join| NetlinkError::NetnsEnter {
            path: netns.path().to_path_buf(),
            source: io::Error::other(join.to_string()),
        })?
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn missing_path_is_netns_not_found() {
        let netns = NetnsRef::new("/nonexistent/routed/netns");
        match run_in_netns(&netns, || ()) {
            Err(NetlinkError::NetnsNotFound(path)) => assert_eq!(path, netns.path()),
            other => panic!("expected NetnsNotFound, got {other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_namespace_cannot_be_entered() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let netns = NetnsRef::new(file.path());
        assert!(matches!(
            run_in_netns(&netns, || ()),
            Err(NetlinkError::NetnsEnter { .. })
        ));
    }

    #[test]
    fn path_constructors() {
        assert_eq!(NetnsRef::from_pid(42).path(), Path::new("/proc/42/ns/net"));
        assert_eq!(
            NetnsRef::named("pod1").path(),
            Path::new("/var/run/netns/pod1")
        );
    }
}
