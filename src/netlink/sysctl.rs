//! Network sysctls under `/proc/sys/net`, in the calling thread's network namespace.
//!
//! Keys are written slash-separated, relative to `/proc/sys` (`net/ipv4/conf/rd1234/proxy_arp`),
//! because interface names may contain dots and the dotted form would be ambiguous. Only `net/`
//! keys are accepted: this module configures interfaces, not the host. The helpers below build
//! the per-interface keys the CNI plugin sets on a host veth (proxy ARP, proxy delay, forwarding,
//! route_localnet, accept_ra). To act inside another namespace, call these from
//! [`run_in_netns`](super::netns::run_in_netns), or use `Netlink::set_sysctl` on a handle from
//! `for_netns`.

use std::path::{Path, PathBuf};

use super::error::{NetlinkError, Operation, Result};

/// Root of the sysctl tree.
pub const PROC_SYS: &str = "/proc/sys";

/// Writes `value` to the sysctl `key` (e.g. `net/ipv4/conf/eth0/forwarding`).
/// A key for an interface that does not exist is [`NetlinkError::NotFound`].
pub fn set_sysctl(key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(Operation::SetSysctl, key)?;
    std::fs::write(&path, format!("{value}\n"))
        .map_err(|source| NetlinkError::from_io(Operation::SetSysctl, key, source))
}

/// Reads the sysctl `key`, trimmed of the trailing newline.
pub fn get_sysctl(key: &str) -> Result<String> {
    let path = sysctl_path(Operation::GetSysctl, key)?;
    std::fs::read_to_string(&path)
        .map(|text| text.trim_end().to_string())
        .map_err(|source| NetlinkError::from_io(Operation::GetSysctl, key, source))
}

/// Validates a key and turns it into its `/proc/sys` path.
pub fn sysctl_path(op: Operation, key: &str) -> Result<PathBuf> {
    let invalid = |message: &str| NetlinkError::InvalidArgument {
        op,
        target: key.to_string(),
        message: message.to_string(),
    };
    if !key.starts_with("net/") {
        return Err(invalid("only net/ sysctls are managed here"));
    }
    if key
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(invalid("empty, '.' or '..' path component"));
    }
    Ok(Path::new(PROC_SYS).join(key))
}

/// `net/ipv4/conf/<if>/proxy_arp`: answer ARP for addresses routed elsewhere (169.254.1.1).
pub fn proxy_arp_key(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/proxy_arp")
}

/// `net/ipv4/neigh/<if>/proxy_delay`: answer proxy ARP at once instead of after up to 800 ms.
pub fn proxy_delay_key(ifname: &str) -> String {
    format!("net/ipv4/neigh/{ifname}/proxy_delay")
}

/// `net/ipv4/conf/<if>/forwarding`.
pub fn ipv4_forwarding_key(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/forwarding")
}

/// `net/ipv6/conf/<if>/forwarding`.
pub fn ipv6_forwarding_key(ifname: &str) -> String {
    format!("net/ipv6/conf/{ifname}/forwarding")
}

/// `net/ipv4/conf/<if>/route_localnet`: allow 127/8 to be routed (DNAT to localhost).
pub fn route_localnet_key(ifname: &str) -> String {
    format!("net/ipv4/conf/{ifname}/route_localnet")
}

/// `net/ipv6/conf/<if>/accept_ra`: ignore router advertisements from the pod.
pub fn accept_ra_key(ifname: &str) -> String {
    format!("net/ipv6/conf/{ifname}/accept_ra")
}

/// `net/ipv6/conf/<if>/proxy_ndp`: the IPv6 counterpart of proxy ARP.
pub fn proxy_ndp_key(ifname: &str) -> String {
    format!("net/ipv6/conf/{ifname}/proxy_ndp")
}

/// `net/ipv4/ip_forward`: the namespace-wide IPv4 forwarding switch.
pub const IP_FORWARD_KEY: &str = "net/ipv4/ip_forward";

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn keys_must_stay_under_net() {
        assert!(sysctl_path(Operation::SetSysctl, "kernel/hostname").is_err());
        assert!(sysctl_path(Operation::SetSysctl, "net/../kernel/hostname").is_err());
        assert!(sysctl_path(Operation::SetSysctl, "net//ipv4").is_err());
        assert_eq!(
            sysctl_path(Operation::SetSysctl, &proxy_arp_key("eth0.100")).unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.100/proxy_arp")
        );
    }

    #[test]
    fn missing_interface_is_not_found() {
        let err = get_sysctl(&proxy_arp_key("routed-no-such-if")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
