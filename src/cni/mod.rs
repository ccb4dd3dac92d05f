//! routed-cni: the CNI plugin. Every `ip link`/`ip addr`/`ip route`/sysctl step of wiring a pod
//! into a pure-L3 network (veth pair, /32, proxy-ARP gateway, host route), as a program.
//!
//! ```text
//!  runtime ──env + stdin──> run() ──┬─ VERSION / STATUS / GC
//!                                   ├─ ADD:  checks → agent allocates (unix socket) → veth pair
//!                                   │        (peer straight into the pod netns) → host sysctls →
//!                                   │        pod address /32 + routes via 169.254.1.1 → host /32 route
//!                                   │        any failure: delete the veth, release the handle
//!                                   ├─ DEL:  release the handle, delete the host veth (idempotent)
//!                                   └─ CHECK: compare the kernel with prevResult
//! ```
//! docs/cni.md lists exactly what the plugin does to a host and every error code it returns.

mod plugin;
pub mod spec;

pub use plugin::{handle_of, host_veth_name, run, HANDLE_PREFIX, STOP_VAR};
