//! IP pools: the address ranges pods are given addresses from, cut into blocks of `block_size`.
//!
//! Semantics follow Calico's IPPool: block size 26 (IPv4) or 122 (IPv6) by default and
//! immutable once blocks exist, one encapsulation at most, no IPIP for IPv6, pools never overlap.

use super::{validate_name, ValidationError};
use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// When a pool's traffic is encapsulated (Calico's `ipipMode` / `vxlanMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    /// Only when the next hop is not on a directly connected subnet.
    CrossSubnet,
}

impl fmt::Display for EncapMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EncapMode::Never => "Never",
            EncapMode::Always => "Always",
            EncapMode::CrossSubnet => "CrossSubnet",
        })
    }
}

impl FromStr for EncapMode {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "never" | "off" => Ok(EncapMode::Never),
            "always" => Ok(EncapMode::Always),
            "crosssubnet" | "cross-subnet" => Ok(EncapMode::CrossSubnet),
            _ => Err(ValidationError::InvalidField {
                field: "encapsulation mode".into(),
                reason: format!("{s:?} is not one of Never, Always, CrossSubnet"),
            }),
        }
    }
}

/// An IP pool (`/routed/v1/ippools/<name>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpPool {
    pub name: String,
    pub cidr: IpNetwork,
    pub block_size: u8,
    #[serde(default)]
    pub ipip_mode: EncapMode,
    #[serde(default)]
    pub vxlan_mode: EncapMode,
    #[serde(default)]
    pub nat_outgoing: bool,
    #[serde(default)]
    pub disabled: bool,
    /// Do not advertise this pool's blocks over BGP.
    #[serde(default)]
    pub disable_bgp_export: bool,
}

/// The block-size range and default for an address family: (min, max, default).
pub fn block_size_limits(cidr: &IpNetwork) -> (u8, u8, u8) {
    match cidr {
        IpNetwork::V4(_) => (20, 32, 26),
        IpNetwork::V6(_) => (116, 128, 122),
    }
}

impl IpPool {
    /// A pool with the family's default block size and no encapsulation.
    pub fn new(name: &str, cidr: IpNetwork) -> Self {
        IpPool {
            name: name.to_string(),
            cidr,
            block_size: block_size_limits(&cidr).2,
            ipip_mode: EncapMode::Never,
            vxlan_mode: EncapMode::Never,
            nat_outgoing: false,
            disabled: false,
            disable_bgp_export: false,
        }
    }

    /// Validates the pool on its own (overlap with others is [`validate_pool_set`]).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        let cidr = self.cidr;
        let (family, host_len) = match cidr {
            IpNetwork::V4(_) => ("IPv4", 32),
            IpNetwork::V6(_) => ("IPv6", 128),
        };
        if cidr.prefix() == host_len {
            return Err(ValidationError::HostAddressAsPool {
                cidr: cidr.to_string(),
                suggestion: suggest_network(&cidr),
            });
        }
        if cidr.ip() != cidr.network() {
            return Err(ValidationError::InvalidCidr {
                input: cidr.to_string(),
                reason: format!(
                    "host bits are set; the network is {}/{}",
                    cidr.network(),
                    cidr.prefix()
                ),
            });
        }
        let (min, max, default) = block_size_limits(&cidr);
        if !(min..=max).contains(&self.block_size) {
            return Err(ValidationError::BlockSizeOutOfRange {
                block_size: self.block_size,
                family,
                min,
                max,
                default,
            });
        }
        if self.block_size < cidr.prefix() {
            return Err(ValidationError::BlockLargerThanPool {
                block_size: self.block_size,
                cidr: cidr.to_string(),
            });
        }
        if self.ipip_mode != EncapMode::Never && self.vxlan_mode != EncapMode::Never {
            return Err(ValidationError::BothEncapsulations {
                name: self.name.clone(),
            });
        }
        if cidr.is_ipv6() && self.ipip_mode != EncapMode::Never {
            return Err(ValidationError::IpipOnIpv6 {
                name: self.name.clone(),
                cidr: cidr.to_string(),
            });
        }
        Ok(())
    }

    /// True when `ip` is inside the pool.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(ip)
    }

    /// The block of this pool that holds `ip`, if the pool holds it.
    pub fn block_containing(&self, ip: IpAddr) -> Option<IpNetwork> {
        if !self.contains(ip) {
            return None;
        }
        let block = IpNetwork::new(ip, self.block_size).ok()?;
        IpNetwork::new(block.network(), self.block_size).ok()
    }

    /// Number of blocks the pool is cut into.
    pub fn block_count(&self) -> u128 {
        1u128 << (self.block_size - self.cidr.prefix()).min(127)
    }

    /// The `index`-th block of the pool (0-based), if there is one.
    pub fn nth_block(&self, index: u128) -> Option<IpNetwork> {
        if index >= self.block_count() {
            return None;
        }
        let shift = host_bits(&self.cidr) - u32::from(self.block_size);
        let offset = index.checked_shl(shift)?;
        let ip = add_to_ip(self.cidr.network(), offset)?;
        IpNetwork::new(ip, self.block_size).ok()
    }
}

/// Checks a set of pools together: each valid and no two overlapping.
pub fn validate_pool_set(pools: &[IpPool]) -> Result<(), ValidationError> {
    for (i, pool) in pools.iter().enumerate() {
        pool.validate()?;
        for other in &pools[..i] {
            if networks_overlap(&pool.cidr, &other.cidr) {
                return Err(ValidationError::PoolsOverlap {
                    name: pool.name.clone(),
                    cidr: pool.cidr.to_string(),
                    other: other.name.clone(),
                    other_cidr: other.cidr.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// True when two networks share at least one address.
pub fn networks_overlap(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// Number of host bits in a network's family (32 or 128).
pub fn host_bits(net: &IpNetwork) -> u32 {
    if net.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ip + offset` within the same family, `None` on overflow.
pub fn add_to_ip(ip: IpAddr, offset: u128) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => {
            let base = u128::from(u32::from(v4));
            let sum = u32::try_from(base.checked_add(offset)?).ok()?;
            Some(IpAddr::V4(sum.into()))
        }
        IpAddr::V6(v6) => Some(IpAddr::V6(u128::from(v6).checked_add(offset)?.into())),
    }
}

/// `ip - base` when `ip >= base` in the same family.
pub fn ip_offset(base: IpAddr, ip: IpAddr) -> Option<u128> {
    match (base, ip) {
        (IpAddr::V4(b), IpAddr::V4(i)) => u32::from(i).checked_sub(u32::from(b)).map(u128::from),
        (IpAddr::V6(b), IpAddr::V6(i)) => u128::from(i).checked_sub(u128::from(b)),
        _ => None,
    }
}

fn suggest_network(cidr: &IpNetwork) -> String {
    let len = if cidr.is_ipv4() { 24 } else { 64 };
    IpNetwork::new(cidr.ip(), len)
        .map(|n| format!("{}/{}", n.network(), len))
        .unwrap_or_else(|_| "ADDRESS/LEN".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str) -> IpPool {
        IpPool::new(name, cidr.parse().unwrap())
    }

    #[test]
    fn defaults_per_family() {
        assert_eq!(pool("a", "10.0.0.0/16").block_size, 26);
        assert_eq!(pool("b", "fd00::/48").block_size, 122);
    }

    #[test]
    fn validation_errors_are_specific() {
        let mut p = pool("a", "10.0.0.0/16");
        p.block_size = 19;
        assert!(matches!(
            p.validate(),
            Err(ValidationError::BlockSizeOutOfRange { .. })
        ));
        p.block_size = 33;
        assert!(p.validate().is_err());
        let mut p = pool("v6", "fd00::/48");
        p.block_size = 115;
        let msg = p.validate().unwrap_err().to_string();
        assert!(msg.contains("116..=128"), "{msg}");
        let mut p = pool("a", "10.0.0.0/16");
        p.ipip_mode = EncapMode::Always;
        p.vxlan_mode = EncapMode::CrossSubnet;
        assert!(matches!(
            p.validate(),
            Err(ValidationError::BothEncapsulations { .. })
        ));
        let mut p = pool("v6", "fd00::/48");
        p.ipip_mode = EncapMode::Always;
        assert!(matches!(
            p.validate(),
            Err(ValidationError::IpipOnIpv6 { .. })
        ));
        let msg = pool("h", "10.1.2.3/32").validate().unwrap_err().to_string();
        assert!(
            msg.contains("host address") && msg.contains("10.1.2.0/24"),
            "{msg}"
        );
        assert!(pool("hb", "10.1.2.3/24").validate().is_err());
        let mut p = pool("small", "10.0.0.0/28");
        p.block_size = 26;
        assert!(matches!(
            p.validate(),
            Err(ValidationError::BlockLargerThanPool { .. })
        ));
    }

    #[test]
    fn overlapping_pools_are_refused() {
        let a = pool("a", "10.0.0.0/16");
        let b = pool("b", "10.0.128.0/24");
        let c = pool("c", "10.1.0.0/16");
        let v6 = pool("v6", "fd00::/48");
        assert!(validate_pool_set(&[a.clone(), c.clone(), v6]).is_ok());
        let err = validate_pool_set(&[a, c, b]).unwrap_err().to_string();
        assert!(err.contains("overlaps pool a"), "{err}");
    }

    #[test]
    fn blocks_are_enumerated_and_located() {
        let p = pool("a", "10.0.0.0/24");
        assert_eq!(p.block_count(), 4);
        assert_eq!(p.nth_block(1).unwrap().to_string(), "10.0.0.64/26");
        assert!(p.nth_block(4).is_none());
        let ip = "10.0.0.200".parse().unwrap();
        assert_eq!(p.block_containing(ip).unwrap().to_string(), "10.0.0.192/26");
        let v6 = pool("v6", "fd00::/120");
        assert_eq!(v6.nth_block(3).unwrap().to_string(), "fd00::c0/122");
    }
}
