//! The tunnel devices: `tunl0` (IPIP) and `vxlan.routed` (VXLAN), created or adopted, with
//! their MTU, state and `/32` address, and removed when no pool uses them; the node's local
//! subnets (what `CrossSubnet` compares with). Called by the tunnel manager (`tunnels`).
//!
//! ```text
//!  tunnels::TunnelManager ──> ensure_ipip_device / ensure_vxlan_device ──> link, MTU, up, address
//!                        └──> remove_device (the fallback tunl0: down, no address)
//! ```

use super::calc;
use crate::netlink::{LinkInfo, MacAddr, Netlink, VxlanSpec};
use anyhow::{Context, Result};
use ipnetwork::IpNetwork;
use std::net::{IpAddr, Ipv4Addr};
use tracing::{info, warn};

pub const IPIP_DEVICE: &str = "tunl0";
pub const VXLAN_DEVICE: &str = "vxlan.routed";
pub const VXLAN_VNI: u32 = 4096;
pub const VXLAN_PORT: u16 = 4789;

/// A locally administered unicast MAC derived from the node name: a re-created VXLAN device
/// keeps the MAC the other nodes already have in their neighbour tables.
pub fn vtep_mac(node: &str) -> MacAddr {
    let digest = sha1_smol::Sha1::from(format!("routed-vtep.{node}").as_bytes())
        .digest()
        .bytes();
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfe) | 0x02;
    MacAddr(mac)
}

/// The subnets of every address on the node's interfaces, leaving out loopback, pod veths and
/// routed's own tunnel devices.
pub async fn local_subnets(netlink: &dyn Netlink) -> Result<Vec<IpNetwork>> {
    let mut addresses = Vec::new();
    for link in netlink.list_links().await.context("listing links")? {
        if link.name == "lo"
            || link.name.starts_with("rd")
            || link.name == IPIP_DEVICE
            || link.name == VXLAN_DEVICE
        {
            continue;
        }
        addresses.extend(
            netlink
                .list_addresses(link.index)
                .await
                .with_context(|| format!("addresses of {}", link.name))?
                .into_iter()
                .filter(|a| !a.ip().is_loopback()),
        );
    }
    Ok(calc::subnets_of(&addresses))
}

/// MTU, up, and exactly `address/32` as IPv4 address (`None`: addresses left as they are).
/// Returns the number of changes made.
async fn ensure_link_state(
    netlink: &dyn Netlink,
    link: &LinkInfo,
    mtu: u32,
    address: Option<Ipv4Addr>,
) -> Result<usize> {
    let mut changes = 0;
    if link.mtu != mtu {
        netlink
            .set_link_mtu(link.index, mtu)
            .await
            .with_context(|| format!("MTU of {}", link.name))?;
        changes += 1;
    }
    let want = address
        .map(|a| IpNetwork::new(IpAddr::V4(a), 32))
        .transpose()?;
    let present = netlink.list_addresses(link.index).await?;
    for stale in present
        .iter()
        .filter(|a| want.is_some_and(|w| a.is_ipv4() && **a != w))
    {
        netlink.delete_address(link.index, *stale).await?;
        info!(device = %link.name, address = %stale, "stale tunnel address removed");
        changes += 1;
    }
    if let Some(want) = want.filter(|w| !present.contains(w)) {
        netlink
            .add_address(link.index, want)
            .await
            .with_context(|| format!("adding {want} to {}", link.name))?;
        info!(device = %link.name, address = %want, "tunnel address set");
        changes += 1;
    }
    if !link.up {
        netlink.set_link_up(link.index).await?;
        changes += 1;
    }
    Ok(changes)
}

/// `tunl0` created (or the kernel's fallback device adopted), MTU set, up, with `address`.
/// Returns the device and the number of changes made.
pub async fn ensure_ipip_device(
    netlink: &dyn Netlink,
    mtu: u32,
    address: Option<Ipv4Addr>,
) -> Result<(LinkInfo, usize)> {
    let mut changes = 0;
    let link = match netlink.link_by_name(IPIP_DEVICE).await? {
        Some(link) => link,
        None => match netlink.create_ipip(IPIP_DEVICE, mtu).await {
            Ok(link) => {
                info!(device = IPIP_DEVICE, mtu, "IPIP device created");
                changes += 1;
                link
            }
            // Asking for an ipip link loads the module, which creates tunl0 itself first.
            Err(e) if e.is_already_exists() => netlink
                .link_by_name(IPIP_DEVICE)
                .await?
                .context("tunl0 exists and vanished")?,
            Err(e) => {
                return Err(e).context("creating tunl0 (is the ipip kernel module available?)")
            }
        },
    };
    if link.kind.as_deref() != Some("ipip") {
        anyhow::bail!(
            "{IPIP_DEVICE} exists but is a {:?} device, not ipip",
            link.kind
        );
    }
    changes += ensure_link_state(netlink, &link, mtu, address).await?;
    Ok((link, changes))
}

/// `vxlan.routed` as `spec` says (re-created when it is not a VXLAN device), up, with `address`.
/// Returns the device and the number of changes made.
pub async fn ensure_vxlan_device(
    netlink: &dyn Netlink,
    spec: &VxlanSpec,
    address: Option<Ipv4Addr>,
) -> Result<(LinkInfo, usize)> {
    let mut changes = 0;
    let existing = netlink.link_by_name(&spec.name).await?;
    let link = match existing {
        Some(link) if link.kind.as_deref() == Some("vxlan") => link,
        other => {
            if other.is_some() {
                warn!(device = %spec.name, "not a VXLAN device; re-creating it");
                netlink.delete_link(&spec.name).await?;
            }
            let link = netlink
                .create_vxlan(spec)
                .await
                .with_context(|| format!("creating {}", spec.name))?;
            info!(device = %spec.name, vni = spec.vni, port = spec.port, local = ?spec.local,
                mtu = spec.mtu, "VXLAN device created");
            changes += 1;
            link
        }
    };
    changes += ensure_link_state(netlink, &link, spec.mtu, address).await?;
    Ok((link, changes))
}

/// Removes a tunnel device no pool needs any more. The IPIP fallback device cannot be deleted:
/// it is left down without addresses. Returns true when something changed.
pub async fn remove_device(netlink: &dyn Netlink, name: &str) -> Result<bool> {
    let Some(link) = netlink.link_by_name(name).await? else {
        return Ok(false);
    };
    let addresses = netlink.list_addresses(link.index).await?;
    if !link.up && addresses.is_empty() {
        return Ok(false); // an undeletable fallback tunl0, already cleaned
    }
    for address in addresses {
        netlink.delete_address(link.index, address).await?;
    }
    netlink.delete_link(name).await?;
    if let Some(still) = netlink.link_by_name(name).await? {
        if still.up {
            netlink.set_link_down(still.index).await?;
        }
    }
    info!(
        device = name,
        "encapsulation device removed (no pool uses it)"
    );
    Ok(true)
}
