//! The one error type of the netlink layer, and the operation names it carries.
//!
//! Every error says which [`Operation`] failed and on what (`target`: an interface name, a route
//! prefix, a sysctl key), so callers log it once at the top and map it at the edge (a CNI error
//! code, a reconciler retry). Kernel errnos that callers branch on become their own variants:
//! `EEXIST` is [`NetlinkError::AlreadyExists`]; `ENODEV`, `ENOENT` and `ESRCH` are
//! [`NetlinkError::NotFound`]; a namespace path that does not exist is
//! [`NetlinkError::NetnsNotFound`] (the CNI plugin reports that precisely). Everything else from
//! the kernel is [`NetlinkError::Kernel`] with the errno and the kernel's extended-ack text.

use std::fmt;
use std::path::PathBuf;

/// Every operation of the [`Netlink`](super::Netlink) trait, by name, and the kernel-only ones
/// of [`KernelNetlink`](super::KernelNetlink) (nexthop objects, route lookup). Errors carry one,
/// and the fake injects failures per trait operation (tests loop over [`Operation::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    LinkByName,
    CreateVeth,
    DeleteLink,
    ListLinks,
    SetLinkUp,
    RenameLink,
    AddAddress,
    ListAddresses,
    AddRoute,
    ReplaceRoute,
    DeleteRoute,
    ListRoutes,
    ReplaceRoutesBatch,
    DeleteRoutesBatch,
    WatchRoutes,
    ReplaceNeighbour,
    ListNeighbours,
    DeleteNeighbour,
    ReplaceFdb,
    ListFdb,
    DeleteFdb,
    SetSysctl,
    GetSysctl,
    EnterNetns,
    CreateIpip,
    CreateVxlan,
    SetLinkDown,
    SetLinkMtu,
    DeleteAddress,
    ListNexthops,
    CreateNexthop,
    DeleteNexthop,
    GetRoute,
}

impl Operation {
    /// All operations of the trait, for tests that inject a failure into each in turn.
    pub const ALL: [Operation; 33] = [
        Operation::LinkByName,
        Operation::CreateVeth,
        Operation::DeleteLink,
        Operation::ListLinks,
        Operation::SetLinkUp,
        Operation::RenameLink,
        Operation::AddAddress,
        Operation::ListAddresses,
        Operation::AddRoute,
        Operation::ReplaceRoute,
        Operation::DeleteRoute,
        Operation::ListRoutes,
        Operation::ReplaceRoutesBatch,
        Operation::DeleteRoutesBatch,
        Operation::WatchRoutes,
        Operation::ReplaceNeighbour,
        Operation::ListNeighbours,
        Operation::DeleteNeighbour,
        Operation::ReplaceFdb,
        Operation::ListFdb,
        Operation::DeleteFdb,
        Operation::SetSysctl,
        Operation::GetSysctl,
        Operation::EnterNetns,
        Operation::CreateIpip,
        Operation::CreateVxlan,
        Operation::SetLinkDown,
        Operation::SetLinkMtu,
        Operation::DeleteAddress,
        Operation::ListNexthops,
        Operation::CreateNexthop,
        Operation::DeleteNexthop,
        Operation::GetRoute,
    ];

    /// The verb_object name used in logs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::LinkByName => "link_by_name",
            Operation::CreateVeth => "create_veth",
            Operation::DeleteLink => "delete_link",
            Operation::ListLinks => "list_links",
            Operation::SetLinkUp => "set_link_up",
            Operation::RenameLink => "rename_link",
            Operation::AddAddress => "add_address",
            Operation::ListAddresses => "list_addresses",
            Operation::AddRoute => "add_route",
            Operation::ReplaceRoute => "replace_route",
            Operation::DeleteRoute => "delete_route",
            Operation::ListRoutes => "list_routes",
            Operation::ReplaceRoutesBatch => "replace_routes_batch",
            Operation::DeleteRoutesBatch => "delete_routes_batch",
            Operation::WatchRoutes => "watch_routes",
            Operation::ReplaceNeighbour => "replace_neighbour",
            Operation::ListNeighbours => "list_neighbours",
            Operation::DeleteNeighbour => "delete_neighbour",
            Operation::ReplaceFdb => "replace_fdb",
            Operation::ListFdb => "list_fdb",
            Operation::DeleteFdb => "delete_fdb",
            Operation::SetSysctl => "set_sysctl",
            Operation::GetSysctl => "get_sysctl",
            Operation::EnterNetns => "enter_netns",
            Operation::CreateIpip => "create_ipip",
            Operation::CreateVxlan => "create_vxlan",
            Operation::SetLinkDown => "set_link_down",
            Operation::SetLinkMtu => "set_link_mtu",
            Operation::DeleteAddress => "delete_address",
            Operation::ListNexthops => "list_nexthops",
            Operation::CreateNexthop => "create_nexthop",
            Operation::DeleteNexthop => "delete_nexthop",
            Operation::GetRoute => "get_route",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of every netlink, namespace and sysctl operation.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The object exists already (`EEXIST`): a link name, an address, a route at the same key.
    #[error("{op} {target}: already exists")]
    AlreadyExists { op: Operation, target: String },

    /// The object, or something it refers to, does not exist (`ENODEV`, `ENOENT`, `ESRCH`).
    #[error("{op} {target}: not found")]
    NotFound { op: Operation, target: String },

    /// The network namespace path does not exist (the pod's sandbox is gone, or never was).
    #[error("network namespace {} does not exist", .0.display())]
    NetnsNotFound(PathBuf),

    /// The path exists but could not be entered (not a netns file, no permission, ...).
    #[error("cannot enter network namespace {}: {source}", .path.display())]
    NetnsEnter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The kernel refused the request.
    #[error("{op} {target}: kernel error {errno} ({}){}", errno_text(*.errno), ext_text(.message))]
    Kernel {
        op: Operation,
        target: String,
        errno: i32,
        /// The kernel's extended-ack message, empty when it gave none.
        message: String,
    },

    /// A socket or file operation failed outside the kernel's netlink answer.
    #[error("{op} {target}: {source}")]
    Io {
        op: Operation,
        target: String,
        #[source]
        source: std::io::Error,
    },

    /// The kernel's answer could not be decoded, or the request could not be built.
    #[error("{op} {target}: {message}")]
    Protocol {
        op: Operation,
        target: String,
        message: String,
    },

    /// The argument is invalid before anything reaches the kernel (bad sysctl key, mixed families).
    #[error("{op} {target}: invalid argument: {message}")]
    InvalidArgument {
        op: Operation,
        target: String,
        message: String,
    },

    /// Not implemented by this backend yet. Never returned as a fake success.
    #[error("{op}: not implemented: {what}")]
    Unsupported { op: Operation, what: &'static str },

    /// A failure injected into the fake by a test.
    #[error("{op} {target}: injected failure")]
    Injected { op: Operation, target: String },
}

impl NetlinkError {
    /// Maps a kernel errno (positive) to the variant callers branch on.
    pub fn from_errno(
        op: Operation,
        target: impl Into<String>,
        errno: i32,
        message: String,
    ) -> Self {
        let target = target.into();
        match errno {
            libc::EEXIST => NetlinkError::AlreadyExists { op, target },
            libc::ENODEV | libc::ENOENT | libc::ESRCH => NetlinkError::NotFound { op, target },
            _ => NetlinkError::Kernel {
                op,
                target,
                errno,
                message,
            },
        }
    }

    /// Wraps an I/O error, mapping the errnos callers branch on like [`Self::from_errno`].
    pub fn from_io(op: Operation, target: impl Into<String>, source: std::io::Error) -> Self {
        let target = target.into();
        match source.raw_os_error() {
            Some(libc::EEXIST) => NetlinkError::AlreadyExists { op, target },
            Some(libc::ENODEV | libc::ENOENT | libc::ESRCH) => {
                NetlinkError::NotFound { op, target }
            }
            _ => NetlinkError::Io { op, target, source },
        }
    }

    /// True for [`NetlinkError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, NetlinkError::NotFound { .. })
    }

    /// True for [`NetlinkError::AlreadyExists`].
    pub fn is_already_exists(&self) -> bool {
        matches!(self, NetlinkError::AlreadyExists { .. })
    }

    /// The operation that failed, when the error names one.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            NetlinkError::AlreadyExists { op, .. }
            | NetlinkError::NotFound { op, .. }
            | NetlinkError::Kernel { op, .. }
            | NetlinkError::Io { op, .. }
            | NetlinkError::Protocol { op, .. }
            | NetlinkError::InvalidArgument { op, .. }
            | NetlinkError::Unsupported { op, .. }
            | NetlinkError::Injected { op, .. } => Some(*op),
            NetlinkError::NetnsNotFound(_) | NetlinkError::NetnsEnter { .. } => {
                Some(Operation::EnterNetns)
            }
        }
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn ext_text(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Result of every operation of this module.
pub type Result<T, E = NetlinkError> = std::result::Result<T, E>;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn from_errno_maps_the_errnos_callers_branch_on() {
        let op = Operation::AddRoute;
        assert!(NetlinkError::from_errno(op, "x", libc::EEXIST, String::new()).is_already_exists());
        for errno in [libc::ENODEV, libc::ENOENT, libc::ESRCH] {
            assert!(NetlinkError::from_errno(op, "x", errno, String::new()).is_not_found());
        }
        let other =
            NetlinkError::from_errno(op, "10.0.0.0/24", libc::EINVAL, "Invalid prefix".into());
        let text = other.to_string();
        assert!(text.contains("add_route 10.0.0.0/24"), "{text}");
        assert!(text.contains("Invalid prefix"), "{text}");
    }

    #[test]
    fn every_operation_has_a_distinct_name() {
        let mut names: Vec<_> = Operation::ALL.iter().map(|op| op.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Operation::ALL.len());
    }
}
