//! [`FakeNetlink`]: an in-memory kernel for unit tests of the CNI plugin and the reconcilers.
//!
//! One shared "world" holds namespaces (the host namespace plus any registered with
//! [`FakeNetlink::add_netns`]), each with links, addresses, routes keyed by [`RouteKey`],
//! nexthop objects, neighbours, FDB entries, sysctls and route watchers. Handles returned by `for_netns` share the
//! world, as real handles share one kernel.
//!
//! It keeps the kernel rules callers depend on: `add_*` of an existing key is `AlreadyExists`,
//! a route or address on a missing ifindex is `NotFound`, deleting a link removes its veth peer,
//! its addresses and the routes through it (and watchers see those deletions), deleting what is
//! absent is `Ok`, and per-interface sysctls exist only for existing interfaces. Nexthop
//! objects as the kernel keeps them: a route written with `nhid N` reports the object's gateway
//! and device (a group's members as multipath hops), an unknown id is refused, and deleting an
//! object drops its routes silently (watchers see one `NexthopDeleted`). A route scan
//! (`fold_routes`) visits a copy, so the visitor runs unlocked; `route_get` is a longest-prefix
//! match over the main table (a local address answers a local route).
//!
//! Failure injection, per [`Operation`]: [`FakeNetlink::inject_failure`] makes every call fail
//! with [`NetlinkError::Injected`] until cleared, [`FakeNetlink::inject_failure_once`] fails the
//! next call only, [`FakeNetlink::inject_errno`] fails with the mapping of a kernel errno (e.g.
//! `EEXIST` → `AlreadyExists`), and [`FakeNetlink::inject_batch_route_failure`] makes one
//! destination fail inside batches. [`FakeNetlink::calls`] records every call in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipnetwork::IpNetwork;
use tokio::sync::mpsc;

use super::error::{NetlinkError, Operation, Result};
use super::monitor::{RouteWatch, CHANNEL_CAPACITY};
use super::netns::NetnsRef;
use super::nexthop::{Nexthop, NexthopSpec};
use super::proto::RouteProtocol;
use super::sysctl::sysctl_path;
use super::types::{
    BatchFailure, BatchReport, FdbEntry, LinkInfo, MacAddr, Neighbour, NextHop, Route, RouteEvent,
    RouteFilter, RouteKey, RouteKind, VxlanSpec,
};
use super::{Netlink, RouteFold};

/// Name of the host namespace in the fake's world.
const HOST: &str = "";

#[derive(Debug, Clone, Copy)]
struct Injection {
    /// `None`: `NetlinkError::Injected`; `Some(errno)`: what the kernel would say.
    errno: Option<i32>,
    /// `None`: every call; `Some(n)`: the next n calls.
    remaining: Option<u32>,
}

#[derive(Default)]
struct FakeNamespace {
    links: BTreeMap<u32, LinkInfo>,
    addresses: Vec<(u32, IpNetwork)>,
    routes: BTreeMap<RouteKey, Route>,
    neighbours: Vec<Neighbour>,
    fdb: Vec<FdbEntry>,
    sysctls: BTreeMap<String, String>,
    watchers: Vec<mpsc::Sender<RouteEvent>>,
    nexthops: BTreeMap<u32, Nexthop>,
}

impl FakeNamespace {
    fn with_loopback(index: u32) -> FakeNamespace {
        let mut namespace = FakeNamespace::default();
        namespace.links.insert(
            index,
            LinkInfo {
                name: "lo".into(),
                index,
                kind: None,
                mac: Some(MacAddr::ZERO),
                mtu: 65536,
                up: true,
                peer_ifindex: None,
            },
        );
        namespace
    }

    fn link_named(&self, name: &str) -> Option<&LinkInfo> {
        self.links.values().find(|link| link.name == name)
    }

    fn notify(&mut self, event: RouteEvent) {
        self.watchers.retain(|watcher| !watcher.is_closed());
        for watcher in &self.watchers {
            if watcher.try_send(event.clone()).is_err() {
                tracing::warn!("fake route watcher full; event dropped");
            }
        }
    }

    fn check_route(&self, op: Operation, route: &Route) -> Result<()> {
        let hops = route.multipath.iter().filter_map(|hop| hop.output_ifindex);
        for ifindex in route.output_ifindex.into_iter().chain(hops) {
            if !self.links.contains_key(&ifindex) {
                return Err(NetlinkError::NotFound {
                    op,
                    target: format!("{} dev {ifindex}", route.destination),
                });
            }
        }
        Ok(())
    }

    /// The route as the kernel stores it: one written with a nexthop object also reports the
    /// object's gateway and device (a group: its members as multipath hops). An unknown id is
    /// refused as the kernel does (EINVAL).
    fn resolve_route(&self, op: Operation, route: &Route) -> Result<Route> {
        let mut route = route.clone();
        let Some(id) = route.nexthop_id else {
            return Ok(route);
        };
        let unknown = || {
            let target = format!("{} nhid {id}", route.destination);
            NetlinkError::from_errno(op, target, libc::EINVAL, "Nexthop id does not exist".into())
        };
        let hop = |member: u32, weight: u16| match self.nexthops.get(&member)?.spec {
            Some(NexthopSpec::Gateway {
                gateway,
                ifindex,
                onlink,
            }) => Some(NextHop {
                gateway: Some(gateway),
                output_ifindex: Some(ifindex),
                weight,
                onlink,
            }),
            _ => None,
        };
        match self.nexthops.get(&id).and_then(|n| n.spec.clone()) {
            Some(NexthopSpec::Gateway { .. }) => {
                let single = hop(id, 1).ok_or_else(unknown)?;
                route.gateway = single.gateway;
                route.output_ifindex = single.output_ifindex;
                route.onlink = single.onlink;
                route.multipath.clear();
            }
            Some(NexthopSpec::Group(members)) => {
                route.multipath = members.iter().filter_map(|(m, w)| hop(*m, *w)).collect();
                route.gateway = None;
                route.output_ifindex = None;
                route.onlink = false;
            }
            None => return Err(unknown()),
        }
        Ok(route)
    }

    /// Deletes nexthop object `id` as the kernel does: its routes go without an RTM_DELROUTE
    /// each (watchers see one `NexthopDeleted`), it leaves the groups it was in, and a group
    /// left empty goes too.
    fn remove_nexthop(&mut self, id: u32) -> bool {
        let Some(removed) = self.nexthops.remove(&id) else {
            return false;
        };
        self.routes.retain(|_, route| route.nexthop_id != Some(id));
        let mut emptied = Vec::new();
        for nexthop in self.nexthops.values_mut() {
            if let Some(NexthopSpec::Group(members)) = &mut nexthop.spec {
                members.retain(|(member, _)| *member != id);
                if members.is_empty() {
                    emptied.push(nexthop.id);
                }
            }
        }
        self.notify(RouteEvent::NexthopDeleted(removed.protocol));
        for group in emptied {
            self.remove_nexthop(group);
        }
        true
    }

    fn put_route(&mut self, route: &Route) {
        let route = route.clone().normalized();
        self.routes.insert(route.key(), route.clone());
        self.notify(RouteEvent::Added(route));
    }

    fn remove_route(&mut self, route: &Route) {
        let key = route.key();
        if self
            .routes
            .get(&key)
            .is_some_and(|existing| existing.protocol == route.protocol)
        {
            if let Some(removed) = self.routes.remove(&key) {
                self.notify(RouteEvent::Deleted(removed));
            }
        }
    }

    fn remove_link(&mut self, index: u32) {
        self.links.remove(&index);
        self.addresses.retain(|(ifindex, _)| *ifindex != index);
        self.neighbours.retain(|n| n.ifindex != index);
        self.fdb.retain(|f| f.ifindex != index);
        let gone: Vec<Route> = self
            .routes
            .values()
            .filter(|r| {
                r.output_ifindex == Some(index)
                    || r.multipath
                        .iter()
                        .any(|hop| hop.output_ifindex == Some(index))
            })
            .cloned()
            .collect();
        for route in gone {
            self.routes.remove(&route.key());
            self.notify(RouteEvent::Deleted(route));
        }
    }
}

struct FakeWorld {
    namespaces: BTreeMap<String, FakeNamespace>,
    next_index: u32,
    injections: HashMap<Operation, Injection>,
    batch_route_failures: HashSet<IpNetwork>,
    calls: Vec<(Operation, String)>,
}

impl FakeWorld {
    fn allocate_index(&mut self) -> u32 {
        self.next_index += 1;
        self.next_index
    }

    /// Records the call and applies any injected failure.
    fn enter(&mut self, op: Operation, target: &str) -> Result<()> {
        self.calls.push((op, target.to_string()));
        let Some(injection) = self.injections.get_mut(&op) else {
            return Ok(());
        };
        let errno = injection.errno;
        match &mut injection.remaining {
            Some(0) => return Ok(()),
            Some(n) => *n -= 1,
            None => {}
        }
        Err(match errno {
            None => NetlinkError::Injected {
                op,
                target: target.to_string(),
            },
            Some(errno) => NetlinkError::from_errno(op, target, errno, "injected".into()),
        })
    }
}

/// The in-memory backend. Cheap to clone; clones share the world.
#[derive(Clone)]
pub struct FakeNetlink {
    world: Arc<Mutex<FakeWorld>>,
    namespace: String,
}

impl Default for FakeNetlink {
    fn default() -> Self {
        FakeNetlink::new()
    }
}

impl FakeNetlink {
    /// A world with a host namespace holding `lo` (ifindex 1).
    pub fn new() -> FakeNetlink {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(HOST.to_string(), FakeNamespace::with_loopback(1));
        FakeNetlink {
            world: Arc::new(Mutex::new(FakeWorld {
                namespaces,
                next_index: 1,
                injections: HashMap::new(),
                batch_route_failures: HashSet::new(),
                calls: Vec::new(),
            })),
            namespace: HOST.to_string(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, FakeWorld> {
        // A panicking test thread must not hide the world from the others.
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `work` on this handle's namespace after recording the call and injections.
    fn with_namespace<T>(
        &self,
        op: Operation,
        target: &str,
        work: impl FnOnce(&mut FakeWorld, &str) -> Result<T>,
    ) -> Result<T> {
        let mut world = self.lock();
        world.enter(op, target)?;
        if !world.namespaces.contains_key(&self.namespace) {
            return Err(NetlinkError::NetnsNotFound(self.namespace.clone().into()));
        }
        let namespace = self.namespace.clone();
        work(&mut world, &namespace)
    }

    /// Registers a namespace (as `ip netns add` would) with its own `lo`.
    pub fn add_netns(&self, netns: &NetnsRef) {
        let mut world = self.lock();
        let index = world.allocate_index();
        world
            .namespaces
            .insert(netns.to_string(), FakeNamespace::with_loopback(index));
    }

    /// Removes a namespace and everything in it (the veth peers in other namespaces go too).
    pub fn remove_netns(&self, netns: &NetnsRef) {
        let mut world = self.lock();
        if let Some(namespace) = world.namespaces.remove(&netns.to_string()) {
            let peers: Vec<u32> = namespace
                .links
                .values()
                .filter_map(|l| l.peer_ifindex)
                .collect();
            for other in world.namespaces.values_mut() {
                for peer in &peers {
                    if other.links.contains_key(peer) {
                        other.remove_link(*peer);
                    }
                }
            }
        }
    }

    /// Adds a link of `kind` (e.g. "dummy", "vxlan") to this handle's namespace; returns its index.
    pub fn add_link(&self, name: &str, kind: &str) -> u32 {
        let mut world = self.lock();
        let index = world.allocate_index();
        if let Some(namespace) = world.namespaces.get_mut(&self.namespace) {
            namespace.links.insert(
                index,
                LinkInfo {
                    name: name.into(),
                    index,
                    kind: Some(kind.into()),
                    mac: Some(MacAddr([0x02, 0, 0, 0, 0, index as u8])),
                    mtu: 1500,
                    up: false,
                    peer_ifindex: None,
                },
            );
        }
        index
    }

    /// Removes a neighbour entry behind the caller's back (`ip neigh del`).
    pub fn delete_neighbour_externally(&self, ifindex: u32, ip: IpAddr) {
        let mut world = self.lock();
        if let Some(namespace) = world.namespaces.get_mut(&self.namespace) {
            namespace
                .neighbours
                .retain(|n| !(n.ifindex == ifindex && n.ip == ip));
        }
    }

    /// Removes an FDB entry behind the caller's back (`bridge fdb del`).
    pub fn delete_fdb_externally(&self, ifindex: u32, mac: MacAddr) {
        let mut world = self.lock();
        if let Some(namespace) = world.namespaces.get_mut(&self.namespace) {
            namespace
                .fdb
                .retain(|f| !(f.ifindex == ifindex && f.mac == mac));
        }
    }

    /// Adds an address behind the caller's back (`ip addr add`), e.g. the node's own.
    pub fn add_address_externally(&self, ifindex: u32, network: IpNetwork) {
        let mut world = self.lock();
        if let Some(namespace) = world.namespaces.get_mut(&self.namespace) {
            namespace.addresses.push((ifindex, network));
        }
    }

    /// Every call of every handle, in order, as (operation, target).
    pub fn calls(&self) -> Vec<(Operation, String)> {
        self.lock().calls.clone()
    }

    /// Every call of `op` fails with [`NetlinkError::Injected`] until [`Self::clear_failures`].
    pub fn inject_failure(&self, op: Operation) {
        self.lock().injections.insert(
            op,
            Injection {
                errno: None,
                remaining: None,
            },
        );
    }

    /// The next call of `op` fails with [`NetlinkError::Injected`].
    pub fn inject_failure_once(&self, op: Operation) {
        self.lock().injections.insert(
            op,
            Injection {
                errno: None,
                remaining: Some(1),
            },
        );
    }

    /// Every call of `op` fails as the kernel would with `errno` (mapped by `from_errno`).
    pub fn inject_errno(&self, op: Operation, errno: i32) {
        self.lock().injections.insert(
            op,
            Injection {
                errno: Some(errno),
                remaining: None,
            },
        );
    }

    /// Routes to `destination` fail inside `replace_routes_batch` (reported, not returned).
    pub fn inject_batch_route_failure(&self, destination: IpNetwork) {
        self.lock().batch_route_failures.insert(destination);
    }

    /// Removes every injected failure.
    pub fn clear_failures(&self) {
        let mut world = self.lock();
        world.injections.clear();
        world.batch_route_failures.clear();
    }

    /// All routes of this handle's namespace, for assertions.
    pub fn routes(&self) -> Vec<Route> {
        self.lock()
            .namespaces
            .get(&self.namespace)
            .map(|ns| ns.routes.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes a route behind the caller's back, as an operator's `ip route del` would
    /// (watchers see it).
    pub fn delete_route_externally(&self, key: &RouteKey) {
        let mut world = self.lock();
        if let Some(namespace) = world.namespaces.get_mut(&self.namespace) {
            if let Some(route) = namespace.routes.remove(key) {
                namespace.notify(RouteEvent::Deleted(route));
            }
        }
    }
}

fn namespace<'a>(world: &'a mut FakeWorld, name: &str) -> &'a mut FakeNamespace {
    world.namespaces.entry(name.to_string()).or_default()
}

/// The interface a per-interface sysctl key names (`net/ipv4/conf/<if>/...`).
fn sysctl_interface(key: &str) -> Option<&str> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["net", "ipv4" | "ipv6", "conf" | "neigh", interface, _] => Some(interface),
        _ => None,
    }
}

fn check_sysctl_interface(namespace: &FakeNamespace, op: Operation, key: &str) -> Result<()> {
    match sysctl_interface(key) {
        Some("all" | "default") | None => Ok(()),
        Some(interface) if namespace.link_named(interface).is_some() => Ok(()),
        Some(_) => Err(NetlinkError::NotFound {
            op,
            target: key.to_string(),
        }),
    }
}

#[async_trait]
impl Netlink for FakeNetlink {
    async fn for_netns(&self, netns: &NetnsRef) -> Result<Box<dyn Netlink>> {
        let mut world = self.lock();
        world.enter(Operation::EnterNetns, &netns.to_string())?;
        if !world.namespaces.contains_key(&netns.to_string()) {
            return Err(NetlinkError::NetnsNotFound(netns.path().to_path_buf()));
        }
        Ok(Box::new(FakeNetlink {
            world: self.world.clone(),
            namespace: netns.to_string(),
        }))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        self.with_namespace(Operation::LinkByName, name, |world, ns| {
            Ok(namespace(world, ns).link_named(name).cloned())
        })
    }

    async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_netns: &NetnsRef,
        host_mac: MacAddr,
        mtu: u32,
    ) -> Result<LinkInfo> {
        let op = Operation::CreateVeth;
        self.with_namespace(op, host_name, |world, ns| {
            let peer_ns = peer_netns.to_string();
            if !world.namespaces.contains_key(&peer_ns) {
                return Err(NetlinkError::NetnsNotFound(peer_netns.path().to_path_buf()));
            }
            if namespace(world, ns).link_named(host_name).is_some()
                || namespace(world, &peer_ns).link_named(peer_name).is_some()
            {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: host_name.to_string(),
                });
            }
            let host_index = world.allocate_index();
            let peer_index = world.allocate_index();
            let link = |name: &str, index, mac, peer| LinkInfo {
                name: name.to_string(),
                index,
                kind: Some("veth".into()),
                mac: Some(mac),
                mtu,
                up: false,
                peer_ifindex: Some(peer),
            };
            let host = link(host_name, host_index, host_mac, peer_index);
            let peer_mac = MacAddr([0x0a, 0x58, 0, 0, (peer_index >> 8) as u8, peer_index as u8]);
            namespace(world, &peer_ns).links.insert(
                peer_index,
                link(peer_name, peer_index, peer_mac, host_index),
            );
            namespace(world, ns).links.insert(host_index, host.clone());
            Ok(host)
        })
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        self.with_namespace(Operation::DeleteLink, name, |world, ns| {
            let Some(link) = namespace(world, ns).link_named(name).cloned() else {
                return Ok(());
            };
            namespace(world, ns).remove_link(link.index);
            if let Some(peer) = link.peer_ifindex {
                for other in world.namespaces.values_mut() {
                    if other.links.contains_key(&peer) {
                        other.remove_link(peer);
                    }
                }
            }
            Ok(())
        })
    }

    async fn list_links(&self) -> Result<Vec<LinkInfo>> {
        self.with_namespace(Operation::ListLinks, "all", |world, ns| {
            Ok(namespace(world, ns).links.values().cloned().collect())
        })
    }

    async fn set_link_up(&self, ifindex: u32) -> Result<()> {
        let op = Operation::SetLinkUp;
        let target = format!("ifindex {ifindex}");
        self.with_namespace(op, &target, |world, ns| {
            match namespace(world, ns).links.get_mut(&ifindex) {
                Some(link) => {
                    link.up = true;
                    Ok(())
                }
                None => Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                }),
            }
        })
    }

    async fn set_link_down(&self, ifindex: u32) -> Result<()> {
        let op = Operation::SetLinkDown;
        let target = format!("ifindex {ifindex}");
        self.with_namespace(op, &target, |world, ns| {
            match namespace(world, ns).links.get_mut(&ifindex) {
                Some(link) => {
                    link.up = false;
                    Ok(())
                }
                None => Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                }),
            }
        })
    }

    async fn set_link_mtu(&self, ifindex: u32, mtu: u32) -> Result<()> {
        let op = Operation::SetLinkMtu;
        let target = format!("ifindex {ifindex} mtu {mtu}");
        self.with_namespace(op, &target, |world, ns| {
            match namespace(world, ns).links.get_mut(&ifindex) {
                Some(link) => {
                    link.mtu = mtu;
                    Ok(())
                }
                None => Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                }),
            }
        })
    }

    async fn create_ipip(&self, name: &str, mtu: u32) -> Result<LinkInfo> {
        let op = Operation::CreateIpip;
        self.with_namespace(op, name, |world, ns| {
            if namespace(world, ns).link_named(name).is_some() {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: name.to_string(),
                });
            }
            let index = world.allocate_index();
            let link = LinkInfo {
                name: name.to_string(),
                index,
                kind: Some("ipip".into()),
                mac: None,
                mtu,
                up: false,
                peer_ifindex: None,
            };
            namespace(world, ns).links.insert(index, link.clone());
            Ok(link)
        })
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<LinkInfo> {
        let op = Operation::CreateVxlan;
        self.with_namespace(op, &spec.name, |world, ns| {
            let namespace_ref = namespace(world, ns);
            if namespace_ref.link_named(&spec.name).is_some() {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: spec.name.clone(),
                });
            }
            if let Some(parent) = spec.parent_ifindex {
                if !namespace_ref.links.contains_key(&parent) {
                    return Err(NetlinkError::NotFound {
                        op,
                        target: format!("{} dev {parent}", spec.name),
                    });
                }
            }
            let index = world.allocate_index();
            let link = LinkInfo {
                name: spec.name.clone(),
                index,
                kind: Some("vxlan".into()),
                mac: Some(spec.mac.unwrap_or(MacAddr([
                    0x06,
                    0,
                    0,
                    0,
                    (index >> 8) as u8,
                    index as u8,
                ]))),
                mtu: spec.mtu,
                up: false,
                peer_ifindex: None,
            };
            namespace(world, ns).links.insert(index, link.clone());
            Ok(link)
        })
    }

    async fn rename_link(&self, ifindex: u32, new_name: &str) -> Result<()> {
        let op = Operation::RenameLink;
        let target = format!("ifindex {ifindex} -> {new_name}");
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if namespace.link_named(new_name).is_some() {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: target.clone(),
                });
            }
            match namespace.links.get_mut(&ifindex) {
                Some(link) => {
                    link.name = new_name.to_string();
                    Ok(())
                }
                None => Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                }),
            }
        })
    }

    async fn add_address(&self, ifindex: u32, network: IpNetwork) -> Result<()> {
        let op = Operation::AddAddress;
        let target = format!("{network} dev {ifindex}");
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if !namespace.links.contains_key(&ifindex) {
                return Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                });
            }
            if namespace.addresses.contains(&(ifindex, network)) {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: target.clone(),
                });
            }
            namespace.addresses.push((ifindex, network));
            Ok(())
        })
    }

    async fn delete_address(&self, ifindex: u32, network: IpNetwork) -> Result<()> {
        let target = format!("{network} dev {ifindex}");
        self.with_namespace(Operation::DeleteAddress, &target, |world, ns| {
            namespace(world, ns)
                .addresses
                .retain(|entry| *entry != (ifindex, network));
            Ok(())
        })
    }

    async fn list_addresses(&self, ifindex: u32) -> Result<Vec<IpNetwork>> {
        self.with_namespace(
            Operation::ListAddresses,
            &format!("ifindex {ifindex}"),
            |world, ns| {
                Ok(namespace(world, ns)
                    .addresses
                    .iter()
                    .filter(|(index, _)| *index == ifindex)
                    .map(|(_, network)| *network)
                    .collect())
            },
        )
    }

    async fn add_route(&self, route: &Route) -> Result<()> {
        let op = Operation::AddRoute;
        let target = route.key().to_string();
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            namespace.check_route(op, route)?;
            let route = namespace.resolve_route(op, route)?;
            if namespace.routes.contains_key(&route.key()) {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: target.clone(),
                });
            }
            namespace.put_route(&route);
            Ok(())
        })
    }

    async fn replace_route(&self, route: &Route) -> Result<()> {
        let op = Operation::ReplaceRoute;
        self.with_namespace(op, &route.key().to_string(), |world, ns| {
            let namespace = namespace(world, ns);
            namespace.check_route(op, route)?;
            let route = namespace.resolve_route(op, route)?;
            namespace.put_route(&route);
            Ok(())
        })
    }

    async fn delete_route(&self, route: &Route) -> Result<()> {
        self.with_namespace(
            Operation::DeleteRoute,
            &route.key().to_string(),
            |world, ns| {
                namespace(world, ns).remove_route(route);
                Ok(())
            },
        )
    }

    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>> {
        self.with_namespace(
            Operation::ListRoutes,
            &format!("{filter:?}"),
            |world, ns| {
                Ok(namespace(world, ns)
                    .routes
                    .values()
                    .filter(|route| filter.matches(route))
                    .cloned()
                    .collect())
            },
        )
    }

    async fn fold_routes(
        &self,
        filter: RouteFilter,
        mut fold: Box<dyn RouteFold>,
    ) -> Result<Box<dyn RouteFold>> {
        // Copied out first: the visitor runs without the world locked, as the kernel's dump
        // runs while others write.
        let routes = self.list_routes(&filter).await?;
        for route in routes {
            fold.visit(route);
        }
        Ok(fold)
    }

    async fn route_get(&self, address: IpAddr) -> Result<Option<Route>> {
        let target = address.to_string();
        self.with_namespace(Operation::GetRoute, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if namespace.addresses.iter().any(|(_, a)| a.ip() == address) {
                let host = IpNetwork::from(address);
                let mut local = Route::blackhole(host, RouteProtocol::KERNEL);
                local.kind = RouteKind::Other(2); // RTN_LOCAL
                return Ok(Some(local));
            }
            // Longest prefix first, then the lowest metric, in the main table.
            Ok(namespace
                .routes
                .values()
                .filter(|r| r.table == super::TABLE_MAIN && r.destination.contains(address))
                .max_by_key(|r| (r.destination.prefix(), std::cmp::Reverse(r.priority)))
                .cloned())
        })
    }

    async fn nexthops(&self) -> Result<Vec<Nexthop>> {
        self.with_namespace(Operation::ListNexthops, "all", |world, ns| {
            Ok(namespace(world, ns).nexthops.values().cloned().collect())
        })
    }

    async fn create_nexthop(
        &self,
        id: u32,
        protocol: RouteProtocol,
        spec: NexthopSpec,
    ) -> Result<()> {
        let op = Operation::CreateNexthop;
        let target = format!("id {id} {spec:?}");
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if namespace.nexthops.contains_key(&id) {
                return Err(NetlinkError::AlreadyExists {
                    op,
                    target: target.clone(),
                });
            }
            let known = match &spec {
                NexthopSpec::Gateway { ifindex, .. } => namespace.links.contains_key(ifindex),
                NexthopSpec::Group(members) => members
                    .iter()
                    .all(|(member, _)| namespace.nexthops.contains_key(member)),
            };
            if !known {
                return Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                });
            }
            let spec = Some(spec);
            namespace
                .nexthops
                .insert(id, Nexthop { id, protocol, spec });
            Ok(())
        })
    }

    async fn delete_nexthop(&self, id: u32) -> Result<()> {
        let op = Operation::DeleteNexthop;
        let target = format!("id {id}");
        self.with_namespace(op, &target, |world, ns| {
            if namespace(world, ns).remove_nexthop(id) {
                Ok(())
            } else {
                Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                })
            }
        })
    }

    async fn replace_routes_batch(&self, routes: &[Route]) -> Result<BatchReport> {
        let op = Operation::ReplaceRoutesBatch;
        self.with_namespace(op, &format!("{} routes", routes.len()), |world, ns| {
            let failing = world.batch_route_failures.clone();
            let namespace = namespace(world, ns);
            let mut report = BatchReport {
                attempted: routes.len(),
                ..BatchReport::default()
            };
            for (index, route) in routes.iter().enumerate() {
                let outcome = if failing.contains(&route.destination) {
                    Err(NetlinkError::Injected {
                        op,
                        target: route.destination.to_string(),
                    })
                } else {
                    namespace
                        .check_route(op, route)
                        .and_then(|()| namespace.resolve_route(op, route))
                };
                match outcome {
                    Ok(route) => {
                        namespace.put_route(&route);
                        report.succeeded += 1;
                    }
                    Err(error) => report.failures.push(BatchFailure {
                        index,
                        key: route.key(),
                        error,
                    }),
                }
            }
            Ok(report)
        })
    }

    async fn delete_routes_batch(&self, routes: &[Route]) -> Result<BatchReport> {
        let op = Operation::DeleteRoutesBatch;
        self.with_namespace(op, &format!("{} routes", routes.len()), |world, ns| {
            let namespace = namespace(world, ns);
            for route in routes {
                namespace.remove_route(route);
            }
            Ok(BatchReport {
                attempted: routes.len(),
                succeeded: routes.len(),
                failures: Vec::new(),
            })
        })
    }

    async fn watch_routes(&self) -> Result<RouteWatch> {
        self.with_namespace(Operation::WatchRoutes, "routes", |world, ns| {
            let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
            namespace(world, ns).watchers.push(sender);
            Ok(RouteWatch::from_receiver(receiver))
        })
    }

    async fn replace_neighbour(&self, neighbour: &Neighbour) -> Result<()> {
        let op = Operation::ReplaceNeighbour;
        let target = format!("{} dev {}", neighbour.ip, neighbour.ifindex);
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if !namespace.links.contains_key(&neighbour.ifindex) {
                return Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                });
            }
            namespace
                .neighbours
                .retain(|n| !(n.ifindex == neighbour.ifindex && n.ip == neighbour.ip));
            namespace.neighbours.push(neighbour.clone());
            Ok(())
        })
    }

    async fn list_neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        self.with_namespace(
            Operation::ListNeighbours,
            &format!("ifindex {ifindex}"),
            |world, ns| {
                Ok(namespace(world, ns)
                    .neighbours
                    .iter()
                    .filter(|n| n.ifindex == ifindex)
                    .cloned()
                    .collect())
            },
        )
    }

    async fn delete_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<()> {
        self.with_namespace(
            Operation::DeleteNeighbour,
            &format!("{ip} dev {ifindex}"),
            |world, ns| {
                namespace(world, ns)
                    .neighbours
                    .retain(|n| !(n.ifindex == ifindex && n.ip == ip));
                Ok(())
            },
        )
    }

    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<()> {
        let op = Operation::ReplaceFdb;
        let target = format!("{} dev {}", entry.mac, entry.ifindex);
        self.with_namespace(op, &target, |world, ns| {
            let namespace = namespace(world, ns);
            if !namespace.links.contains_key(&entry.ifindex) {
                return Err(NetlinkError::NotFound {
                    op,
                    target: target.clone(),
                });
            }
            namespace
                .fdb
                .retain(|f| !(f.ifindex == entry.ifindex && f.mac == entry.mac));
            namespace.fdb.push(entry.clone());
            Ok(())
        })
    }

    async fn list_fdb(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        self.with_namespace(
            Operation::ListFdb,
            &format!("ifindex {ifindex}"),
            |world, ns| {
                Ok(namespace(world, ns)
                    .fdb
                    .iter()
                    .filter(|f| f.ifindex == ifindex)
                    .cloned()
                    .collect())
            },
        )
    }

    async fn delete_fdb(&self, entry: &FdbEntry) -> Result<()> {
        let target = format!("{} dev {}", entry.mac, entry.ifindex);
        self.with_namespace(Operation::DeleteFdb, &target, |world, ns| {
            namespace(world, ns)
                .fdb
                .retain(|f| !(f.ifindex == entry.ifindex && f.mac == entry.mac));
            Ok(())
        })
    }

    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let op = Operation::SetSysctl;
        self.with_namespace(op, key, |world, ns| {
            sysctl_path(op, key)?;
            let namespace = namespace(world, ns);
            check_sysctl_interface(namespace, op, key)?;
            namespace.sysctls.insert(key.to_string(), value.to_string());
            Ok(())
        })
    }

    async fn get_sysctl(&self, key: &str) -> Result<String> {
        let op = Operation::GetSysctl;
        self.with_namespace(op, key, |world, ns| {
            sysctl_path(op, key)?;
            let namespace = namespace(world, ns);
            check_sysctl_interface(namespace, op, key)?;
            Ok(namespace
                .sysctls
                .get(key)
                .cloned()
                .unwrap_or_else(|| "0".into()))
        })
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod fake_tests;
