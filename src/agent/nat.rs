//! natOutgoing: pods of a pool with `nat_outgoing` reach the world with the node's address.
//!
//! ```text
//!  follower::follow_prefix(ippools/) ──> pools ──> PoolSets::from_pools (pure: desired)
//!                                                           │
//!  reconciler::run, one pass on a pool change,              v
//!  the 10 s resync (read back: table gone? ──> pod MTU (node MTU − encapsulation, unless --mtu)
//!  forward chains of others?), a retry              ──> changed? ──> forward::apply_ruleset
//!                                                     (one `nft -f`: table inet routed rebuilt)
//! ```
//! Nothing runs before the pools are read: at start the table found in the kernel is kept.
//!
//! The rule, Calico's: masquerade a packet whose source is in an enabled pool with
//! `nat_outgoing` and whose destination is outside *every* pool (enabled or disabled: a disabled
//! pool may still hold running pods). Pod-to-pod traffic therefore keeps its source address, on
//! this node and across nodes. The pools live in named interval sets of `table inet routed`
//! (`pools_v4`, `pools_v6`, `nat_pools_v4`, `nat_pools_v6`), which the forward chain also uses to
//! accept pool traffic; [`render_sets`] and [`render_postrouting`] produce their parts of the
//! table that [`super::forward::render_ruleset`] assembles.
//!
//! The sysctls a routed node needs beside `ip_forward`: strict reverse-path filtering
//! (`rp_filter=1`) drops pod traffic that arrives over a tunnel or an asymmetric path, so
//! [`relax_rp_filter`] turns `net.ipv4.conf.all.rp_filter` from 1 into 2 (loose) and leaves
//! 0 and 2 alone. The kernel uses the larger of `all` and the interface's value, so `all=2`
//! makes every interface loose.

use super::reconciler::{self, Applied, Reconciler, Triggers, Wake};
use super::{forward, AgentState};
use crate::model::{keys, IpPool};
use crate::netlink::sysctl;
use async_trait::async_trait;
use ipnetwork::IpNetwork;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Comment on the masquerade rules (find them with `nft -a list chain inet routed postrouting`).
pub const MASQUERADE_COMMENT: &str = "routed-nat-outgoing";
/// How often the table is read back (gone? other forward chains?).
pub const RESYNC_EVERY: Duration = Duration::from_secs(10);

/// The pool CIDRs the ruleset needs, per family, sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSets {
    /// Every pool, enabled or not: "inside the cluster".
    pub all_v4: BTreeSet<IpNetwork>,
    pub all_v6: BTreeSet<IpNetwork>,
    /// Enabled pools with `nat_outgoing`.
    pub nat_v4: BTreeSet<IpNetwork>,
    pub nat_v6: BTreeSet<IpNetwork>,
}

impl PoolSets {
    pub fn from_pools<'a>(pools: impl IntoIterator<Item = &'a IpPool>) -> PoolSets {
        let mut sets = PoolSets::default();
        for pool in pools {
            let cidr = normalized(pool.cidr);
            let (all, nat) = match cidr {
                IpNetwork::V4(_) => (&mut sets.all_v4, &mut sets.nat_v4),
                IpNetwork::V6(_) => (&mut sets.all_v6, &mut sets.nat_v6),
            };
            all.insert(cidr);
            if pool.nat_outgoing && !pool.disabled {
                nat.insert(cidr);
            }
        }
        sets
    }
}

/// Host bits cleared: nft refuses `10.0.0.1/16` in an interval set.
fn normalized(cidr: IpNetwork) -> IpNetwork {
    IpNetwork::new(cidr.network(), cidr.prefix()).unwrap_or(cidr)
}

fn render_set(name: &str, kind: &str, elements: &BTreeSet<IpNetwork>) -> String {
    let mut out = format!("  set {name} {{\n    type {kind}; flags interval; auto-merge;\n");
    if !elements.is_empty() {
        let list: Vec<String> = elements.iter().map(|e| e.to_string()).collect();
        out.push_str(&format!("    elements = {{ {} }}\n", list.join(", ")));
    }
    out.push_str("  }\n");
    out
}

/// The four named sets (declared inside `table inet routed { ... }`).
pub fn render_sets(sets: &PoolSets) -> String {
    [
        render_set("pools_v4", "ipv4_addr", &sets.all_v4),
        render_set("pools_v6", "ipv6_addr", &sets.all_v6),
        render_set("nat_pools_v4", "ipv4_addr", &sets.nat_v4),
        render_set("nat_pools_v6", "ipv6_addr", &sets.nat_v6),
    ]
    .concat()
}

/// The source-NAT chain: masquerade nat-pool sources going outside every pool.
pub fn render_postrouting() -> String {
    format!(
        "  chain postrouting {{\n    \
             type nat hook postrouting priority srcnat; policy accept;\n    \
             ip saddr @nat_pools_v4 ip daddr != @pools_v4 counter masquerade comment \"{MASQUERADE_COMMENT}\"\n    \
             ip6 saddr @nat_pools_v6 ip6 daddr != @pools_v6 counter masquerade comment \"{MASQUERADE_COMMENT}\"\n  \
         }}\n"
    )
}

/// Sets `net.ipv4.conf.all.rp_filter` to 2 when it is 1 (strict); returns the value in force.
pub fn relax_rp_filter() -> Option<String> {
    const KEY: &str = "net/ipv4/conf/all/rp_filter";
    match sysctl::get_sysctl(KEY) {
        Ok(value) if value.trim() == "1" => match sysctl::set_sysctl(KEY, "2") {
            Ok(()) => {
                info!("net.ipv4.conf.all.rp_filter was 1 (strict); set to 2 (loose) so pod traffic over tunnels and asymmetric paths is not dropped");
                Some("2".into())
            }
            Err(e) => {
                warn!(error = %e, "net.ipv4.conf.all.rp_filter is 1 (strict) and could not be relaxed; pod traffic over asymmetric paths may be dropped");
                Some(value)
            }
        },
        Ok(value) => {
            info!(rp_filter = %value, "net.ipv4.conf.all.rp_filter left as found");
            Some(value)
        }
        Err(e) => {
            warn!(error = %e, "cannot read net.ipv4.conf.all.rp_filter");
            None
        }
    }
}

/// What the pools want: the pod MTU follows them, and the ruleset holds their sets.
pub struct NatDesired {
    pub pools: Vec<IpPool>,
    pub sets: PoolSets,
}

/// The nftables reconciler: keeps `table inet routed` (forward acceptance and NAT; unless
/// `--no-forward-rules`) and the pod MTU in line with the pools.
pub struct NatTable {
    state: Arc<AgentState>,
    /// What the last successful `nft -f` put in the kernel (`None`: unknown, or gone).
    in_kernel: Option<PoolSets>,
}

impl NatTable {
    /// The resync's read-back: a table someone flushed is programmed again; drop-policy
    /// forward chains that appeared since get their acceptance rules.
    async fn read_back(&mut self) {
        if self.in_kernel.is_none() {
            return;
        }
        if !forward::table_exists().await {
            warn!("table inet routed disappeared; programming it again");
            self.in_kernel = None;
        } else if let Err(e) = forward::accept_in_foreign_chains().await {
            warn!(error = %format!("{e:#}"), "cannot accept pod traffic in other forward chains");
        }
    }
}

#[async_trait]
impl Reconciler for NatTable {
    type Input = BTreeMap<String, IpPool>;
    type Desired = NatDesired;
    type Event = ();

    fn name(&self) -> &'static str {
        "nat"
    }

    fn desired(&self, pools: &BTreeMap<String, IpPool>) -> NatDesired {
        NatDesired {
            pools: pools.values().cloned().collect(),
            sets: PoolSets::from_pools(pools.values()),
        }
    }

    async fn apply(&mut self, desired: NatDesired, wake: Wake) -> anyhow::Result<Applied> {
        if wake.timer {
            self.read_back().await;
        }
        self.state.update_pod_mtu(&desired.pools);
        let sets = desired.sets;
        if !self.state.manage_forward || self.in_kernel.as_ref() == Some(&sets) {
            return Ok(Applied::default());
        }
        forward::apply_ruleset(&sets)
            .await
            .map_err(|e| e.context("cannot program table inet routed"))?;
        info!(pools_v4 = ?sets.all_v4, nat_v4 = ?sets.nat_v4, pools_v6 = ?sets.all_v6,
            nat_v6 = ?sets.nat_v6, "nftables: table inet routed programmed");
        self.in_kernel = Some(sets);
        self.state.nftables_applied.store(true, Ordering::Relaxed);
        Ok(Applied::changes(1))
    }
}

/// Follows the pools and runs the nftables reconciler on them. `nftables_applied` is set once
/// a ruleset with the datastore's pools is in the kernel.
pub async fn run(state: Arc<AgentState>) {
    let pools_rx =
        super::follower::spawn_follow_prefix::<IpPool>(state.store.clone(), keys::POOLS, "pool");
    let stats = state.reconciler_stats("nat");
    let table = NatTable {
        state,
        in_kernel: None,
    };
    reconciler::run(table, pools_rx, Triggers::every(RESYNC_EVERY), stats).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(name: &str, cidr: &str, nat: bool, disabled: bool) -> IpPool {
        let mut p = IpPool::new(name, cidr.parse().unwrap());
        p.nat_outgoing = nat;
        p.disabled = disabled;
        p
    }

    #[test]
    fn nat_sets_hold_enabled_nat_pools_and_all_sets_every_pool() {
        let pools = [
            pool("a", "10.1.0.0/16", true, false),
            pool("b", "10.2.0.0/16", false, false),
            pool("c", "10.3.0.0/16", true, true),
            pool("d", "fd00:1::/64", true, false),
        ];
        let sets = PoolSets::from_pools(&pools);
        let v4 = |list: &[&str]| -> BTreeSet<IpNetwork> {
            list.iter().map(|s| s.parse().unwrap()).collect()
        };
        assert_eq!(sets.nat_v4, v4(&["10.1.0.0/16"]));
        assert_eq!(
            sets.all_v4,
            v4(&["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"])
        );
        assert_eq!(sets.nat_v6, v4(&["fd00:1::/64"]));
        assert_eq!(sets.all_v6, sets.nat_v6);
    }

    #[test]
    fn sets_render_as_interval_sets_and_empty_ones_have_no_elements() {
        let sets = PoolSets::from_pools(&[pool("a", "10.1.0.0/16", true, false)]);
        let text = render_sets(&sets);
        assert!(text.contains(
            "  set pools_v4 {\n    type ipv4_addr; flags interval; auto-merge;\n    elements = { 10.1.0.0/16 }\n  }\n"
        ), "{text}");
        assert!(
            text.contains(
                "  set pools_v6 {\n    type ipv6_addr; flags interval; auto-merge;\n  }\n"
            ),
            "{text}"
        );
        let chain = render_postrouting();
        assert!(chain.contains("type nat hook postrouting priority srcnat"));
        assert!(chain.contains("ip saddr @nat_pools_v4 ip daddr != @pools_v4 counter masquerade"));
    }
}
