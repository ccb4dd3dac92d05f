//! [`KernelNetlink`]: the [`Netlink`] trait over real rtnetlink sockets.
//!
//! Each handle owns, in one network namespace:
//! - a request socket driven by rtnetlink's connection task (`netlink-proto`): every request
//!   carries `NLM_F_ACK`, and the answer stream is read to its end, so an error is never missed;
//!   the socket has `NETLINK_EXT_ACK` on (errors carry the kernel's text) and strict dump checking
//!   (the kernel filters route dumps by table and protocol itself);
//! - the blocking batch socket of `batch.rs`.
//!
//! Both are created by a thread inside the namespace (`netns.rs`) and then used from tokio. The
//! monitor socket (`monitor.rs`) is opened per `watch_routes` call. Requests are built and
//! answers parsed in `message.rs`; kernel errnos become [`NetlinkError`] variants there and in
//! [`NetlinkError::from_errno`].

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use ipnetwork::IpNetwork;
use rtnetlink::packet_core::{
    NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
};
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, TokioSocket};
use rtnetlink::{Handle, LinkIpIp, LinkMessageBuilder, LinkUnspec, LinkVxlan};
use tokio::task::JoinHandle;

use super::batch::{
    run_batch, run_nexthop_create, run_nexthop_delete, run_nexthop_dump, run_route_get, run_scan,
    BatchKind, BatchSocket,
};
use super::error::{NetlinkError, Operation, Result};
use super::message::{
    address_from_message, address_message, ext_ack_message, fdb_from_message, fdb_message,
    link_from_message, neighbour_from_message, neighbour_message, request_message,
    route_delete_message, route_dump_message, route_from_message, route_message,
};
use super::monitor::{attach_deletion_filter, open_monitor_socket, start_watch, RouteWatch};
use super::netns::{run_in_netns_async, NetnsRef};
use super::nexthop::{Nexthop, NexthopSpec};
use super::sysctl;
use super::types::{
    BatchReport, Family, FdbEntry, LinkInfo, MacAddr, Neighbour, Route, RouteFilter, VxlanSpec,
};
use super::{Netlink, RouteFold, RouteProtocol};

/// The real backend. Not `Clone`: share it behind an `Arc`.
pub struct KernelNetlink {
    handle: Handle,
    netns: Option<NetnsRef>,
    batch: Arc<Mutex<BatchSocket>>,
    connection: JoinHandle<()>,
}

impl Drop for KernelNetlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Opens the request and batch sockets in the calling thread's namespace.
fn open_sockets() -> std::io::Result<(Socket, BatchSocket)> {
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.set_ext_ack(true)?;
    // Strict checking makes the kernel filter dumps; an old kernel without it still works.
    if let Err(error) = socket.set_netlink_get_strict_chk(true) {
        tracing::debug!(%error, "NETLINK_GET_STRICT_CHK unavailable");
    }
    socket.set_non_blocking(true)?;
    Ok((socket, BatchSocket::open()?))
}

impl KernelNetlink {
    /// A handle on the caller's network namespace. Must run inside a tokio runtime.
    pub async fn new() -> Result<KernelNetlink> {
        let (socket, batch) = open_sockets().map_err(|source| NetlinkError::Io {
            op: Operation::EnterNetns,
            target: "current namespace".into(),
            source,
        })?;
        Self::start(socket, batch, None)
    }

    /// A handle operating inside `netns`; [`NetlinkError::NetnsNotFound`] when it does not exist.
    pub async fn open_in_netns(netns: &NetnsRef) -> Result<KernelNetlink> {
        let (socket, batch) = run_in_netns_async(netns, open_sockets)
            .await?
            .map_err(|source| NetlinkError::Io {
                op: Operation::EnterNetns,
                target: netns.to_string(),
                source,
            })?;
        Self::start(socket, batch, Some(netns.clone()))
    }

    fn start(socket: Socket, batch: BatchSocket, netns: Option<NetnsRef>) -> Result<KernelNetlink> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(NetlinkError::Protocol {
                op: Operation::EnterNetns,
                target: "runtime".into(),
                message: "KernelNetlink needs a tokio runtime".into(),
            });
        }
        // SAFETY: the fd comes from a socket we own and hand over; it is non-blocking already,
        // and a runtime exists (checked above), so TokioSocket's registration cannot fail on that.
        let socket = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (connection, handle, _unsolicited) = rtnetlink::from_socket(socket);
        let connection = tokio::spawn(connection);
        Ok(KernelNetlink {
            handle,
            netns,
            batch: Arc::new(Mutex::new(batch)),
            connection,
        })
    }

    /// Visits every route `filter` selects without collecting them (a streaming dump on the
    /// batch socket); returns what the visitor gathered in `state`. For tables too big to
    /// copy, like a full BGP table.
    pub async fn scan_routes<S, F>(&self, filter: RouteFilter, state: S, visit: F) -> Result<S>
    where
        S: Send + 'static,
        F: FnMut(&mut S, Route) + Send + 'static,
    {
        run_scan(self.batch.clone(), filter, state, visit).await
    }

    /// The namespace this handle operates in; `None` for the caller's own.
    pub fn netns(&self) -> Option<&NetnsRef> {
        self.netns.as_ref()
    }

    /// Sends one request (with ACK) and collects every answer until the stream ends.
    async fn request(
        &self,
        op: Operation,
        target: &str,
        payload: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        let message = request_message(payload, flags | NLM_F_ACK, 0);
        let mut handle = self.handle.clone();
        let mut answers = handle
            .request(message)
            .map_err(|error| NetlinkError::Protocol {
                op,
                target: target.to_string(),
                message: error.to_string(),
            })?;
        let mut out = Vec::new();
        while let Some(answer) = answers.next().await {
            match answer.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(error) => {
                    if let Some(code) = error.code {
                        let text = ext_ack_message(answer.header.flags, &error.header);
                        return Err(NetlinkError::from_errno(op, target, -code.get(), text));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn dump(
        &self,
        op: Operation,
        target: &str,
        payload: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.request(op, target, payload, NLM_F_DUMP).await
    }

    async fn list_neighbour_messages(
        &self,
        op: Operation,
        family: AddressFamily,
        ifindex: u32,
    ) -> Result<Vec<NeighbourMessage>> {
        let mut request = NeighbourMessage::default();
        request.header.family = family;
        // Strict dump checking rejects a header ifindex; the kernel filters on NDA_IFINDEX.
        request
            .attributes
            .push(NeighbourAttribute::IfIndex(ifindex));
        let answers = self
            .dump(
                op,
                &format!("ifindex {ifindex}"),
                RouteNetlinkMessage::GetNeighbour(request),
            )
            .await?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewNeighbour(message) if message.header.ifindex == ifindex => {
                    Some(message)
                }
                _ => None,
            })
            .collect())
    }

    /// A route monitor in this handle's namespace; with `deletions_of`, filtered in the kernel
    /// to RTM_DELROUTE of those protocol numbers.
    async fn open_watch(&self, deletions_of: Option<Vec<u8>>) -> Result<RouteWatch> {
        let op = Operation::WatchRoutes;
        let target = self
            .netns
            .as_ref()
            .map_or("current namespace".into(), |n| n.to_string());
        let open = move || {
            let socket = open_monitor_socket(deletions_of.is_some())?;
            if let Some(protocols) = &deletions_of {
                attach_deletion_filter(&socket, protocols)?;
            }
            Ok::<_, std::io::Error>(socket)
        };
        let socket = match &self.netns {
            Some(netns) => run_in_netns_async(netns, open).await?,
            None => open(),
        }
        .map_err(|source| NetlinkError::from_io(op, target.clone(), source))?;
        start_watch(socket).map_err(|source| NetlinkError::from_io(op, target, source))
    }

    /// Runs `work` in this handle's namespace (sysctls), or right here when it has none.
    async fn in_namespace<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match &self.netns {
            Some(netns) => run_in_netns_async(netns, work).await?,
            None => work(),
        }
    }
}

#[async_trait]
impl Netlink for KernelNetlink {
    async fn for_netns(&self, netns: &NetnsRef) -> Result<Box<dyn Netlink>> {
        Ok(Box::new(KernelNetlink::open_in_netns(netns).await?))
    }

    async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>> {
        let message = LinkUnspec::new_with_name(name).build();
        match self
            .request(
                Operation::LinkByName,
                name,
                RouteNetlinkMessage::GetLink(message),
                0,
            )
            .await
        {
            Ok(answers) => Ok(answers.iter().find_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link_from_message(link)),
                _ => None,
            })),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
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
        let target = format!("{host_name} (peer {peer_name} in {peer_netns})");
        // Kept open until the kernel has answered: the request refers to it by fd.
        let netns_file = peer_netns.open()?;
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(peer_name.to_string()),
            LinkAttribute::Mtu(mtu),
            LinkAttribute::NetNsFd(netns_file.as_raw_fd()),
        ];
        let message = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .mtu(mtu)
            .address(host_mac.0.to_vec())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        let result = self
            .request(
                op,
                &target,
                RouteNetlinkMessage::NewLink(message),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .await;
        drop(netns_file);
        result?;
        self.link_by_name(host_name)
            .await?
            .ok_or_else(|| NetlinkError::Protocol {
                op,
                target,
                message: "created, but not found afterwards".into(),
            })
    }

    async fn delete_link(&self, name: &str) -> Result<()> {
        let op = Operation::DeleteLink;
        let Some(link) = self.link_by_name(name).await? else {
            return Ok(());
        };
        let message = LinkUnspec::new_with_index(link.index).build();
        match self
            .request(op, name, RouteNetlinkMessage::DelLink(message), 0)
            .await
        {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn list_links(&self) -> Result<Vec<LinkInfo>> {
        let request = LinkMessage::default();
        let answers = self
            .dump(
                Operation::ListLinks,
                "all",
                RouteNetlinkMessage::GetLink(request),
            )
            .await?;
        Ok(answers
            .iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewLink(link) => Some(link_from_message(link)),
                _ => None,
            })
            .collect())
    }

    async fn set_link_up(&self, ifindex: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(ifindex).up().build();
        let target = format!("ifindex {ifindex}");
        self.request(
            Operation::SetLinkUp,
            &target,
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
        .map(|_| ())
    }

    async fn set_link_down(&self, ifindex: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(ifindex).down().build();
        let target = format!("ifindex {ifindex}");
        self.request(
            Operation::SetLinkDown,
            &target,
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
        .map(|_| ())
    }

    async fn set_link_mtu(&self, ifindex: u32, mtu: u32) -> Result<()> {
        let message = LinkUnspec::new_with_index(ifindex).mtu(mtu).build();
        let target = format!("ifindex {ifindex} mtu {mtu}");
        self.request(
            Operation::SetLinkMtu,
            &target,
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
        .map(|_| ())
    }

    async fn create_ipip(&self, name: &str, mtu: u32) -> Result<LinkInfo> {
        let op = Operation::CreateIpip;
        let message = LinkIpIp::new(name).mtu(mtu).build();
        self.request(
            op,
            name,
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await?;
        self.link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::Protocol {
                op,
                target: name.to_string(),
                message: "created, but not found afterwards".into(),
            })
    }

    async fn create_vxlan(&self, spec: &VxlanSpec) -> Result<LinkInfo> {
        let op = Operation::CreateVxlan;
        let mut builder = LinkVxlan::new(&spec.name, spec.vni)
            .port(spec.port)
            .learning(spec.learning)
            .mtu(spec.mtu);
        if let Some(local) = spec.local {
            builder = builder.local(local);
        }
        if let Some(parent) = spec.parent_ifindex {
            builder = builder.dev(parent);
        }
        if let Some(mac) = spec.mac {
            builder = builder.address(mac.0.to_vec());
        }
        self.request(
            op,
            &spec.name,
            RouteNetlinkMessage::NewLink(builder.build()),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await?;
        self.link_by_name(&spec.name)
            .await?
            .ok_or_else(|| NetlinkError::Protocol {
                op,
                target: spec.name.clone(),
                message: "created, but not found afterwards".into(),
            })
    }

    async fn rename_link(&self, ifindex: u32, new_name: &str) -> Result<()> {
        let message = LinkUnspec::new_with_index(ifindex).name(new_name).build();
        let target = format!("ifindex {ifindex} -> {new_name}");
        self.request(
            Operation::RenameLink,
            &target,
            RouteNetlinkMessage::SetLink(message),
            0,
        )
        .await
        .map(|_| ())
    }

    async fn add_address(&self, ifindex: u32, network: IpNetwork) -> Result<()> {
        let message = address_message(ifindex, network);
        let target = format!("{network} dev {ifindex}");
        self.request(
            Operation::AddAddress,
            &target,
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(|_| ())
    }

    async fn delete_address(&self, ifindex: u32, network: IpNetwork) -> Result<()> {
        let message = address_message(ifindex, network);
        let target = format!("{network} dev {ifindex}");
        match self
            .request(
                Operation::DeleteAddress,
                &target,
                RouteNetlinkMessage::DelAddress(message),
                0,
            )
            .await
        {
            Err(error) if error.is_not_found() => Ok(()),
            // The kernel answers EADDRNOTAVAIL for an address the interface does not have.
            Err(NetlinkError::Kernel { errno, .. }) if errno == libc::EADDRNOTAVAIL => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn list_addresses(&self, ifindex: u32) -> Result<Vec<IpNetwork>> {
        let mut request = AddressMessage::default();
        request.header.index = ifindex;
        let answers = self
            .dump(
                Operation::ListAddresses,
                &format!("ifindex {ifindex}"),
                RouteNetlinkMessage::GetAddress(request),
            )
            .await?;
        Ok(answers
            .iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewAddress(message) => address_from_message(message),
                _ => None,
            })
            .filter(|(index, _)| *index == ifindex)
            .map(|(_, network)| network)
            .collect())
    }

    async fn add_route(&self, route: &Route) -> Result<()> {
        let target = route.key().to_string();
        let payload = RouteNetlinkMessage::NewRoute(route_message(route));
        self.request(
            Operation::AddRoute,
            &target,
            payload,
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .await
        .map(|_| ())
    }

    async fn replace_route(&self, route: &Route) -> Result<()> {
        let target = route.key().to_string();
        let payload = RouteNetlinkMessage::NewRoute(route_message(route));
        self.request(
            Operation::ReplaceRoute,
            &target,
            payload,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(|_| ())
    }

    async fn delete_route(&self, route: &Route) -> Result<()> {
        let target = route.key().to_string();
        let payload = RouteNetlinkMessage::DelRoute(route_delete_message(route));
        match self
            .request(Operation::DeleteRoute, &target, payload, 0)
            .await
        {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn fold_routes(
        &self,
        filter: RouteFilter,
        fold: Box<dyn RouteFold>,
    ) -> Result<Box<dyn RouteFold>> {
        run_scan(self.batch.clone(), filter, fold, |fold, route| {
            fold.visit(route)
        })
        .await
    }

    async fn route_get(&self, address: IpAddr) -> Result<Option<Route>> {
        run_route_get(self.batch.clone(), address).await
    }

    async fn nexthops(&self) -> Result<Vec<Nexthop>> {
        run_nexthop_dump(self.batch.clone()).await
    }

    async fn create_nexthop(
        &self,
        id: u32,
        protocol: RouteProtocol,
        spec: NexthopSpec,
    ) -> Result<()> {
        run_nexthop_create(self.batch.clone(), id, protocol, spec).await
    }

    async fn delete_nexthop(&self, id: u32) -> Result<()> {
        run_nexthop_delete(self.batch.clone(), id).await
    }

    async fn list_routes(&self, filter: &RouteFilter) -> Result<Vec<Route>> {
        let families = match filter.family {
            Some(family) => vec![family],
            None => vec![Family::V4, Family::V6],
        };
        let mut routes = Vec::new();
        for family in families {
            let request = route_dump_message(family, filter);
            let answers = self
                .dump(
                    Operation::ListRoutes,
                    &format!("{filter:?}"),
                    RouteNetlinkMessage::GetRoute(request),
                )
                .await?;
            routes.extend(
                answers
                    .iter()
                    .filter_map(|answer| match answer {
                        RouteNetlinkMessage::NewRoute(message) => route_from_message(message),
                        _ => None,
                    })
                    .filter(|route| filter.matches(route)),
            );
        }
        Ok(routes)
    }

    async fn replace_routes_batch(&self, routes: &[Route]) -> Result<BatchReport> {
        run_batch(self.batch.clone(), routes.to_vec(), BatchKind::Replace).await
    }

    async fn delete_routes_batch(&self, routes: &[Route]) -> Result<BatchReport> {
        run_batch(self.batch.clone(), routes.to_vec(), BatchKind::Delete).await
    }

    async fn watch_routes(&self) -> Result<RouteWatch> {
        self.open_watch(None).await
    }

    async fn watch_route_deletions(&self, protocols: &[RouteProtocol]) -> Result<RouteWatch> {
        self.open_watch(Some(protocols.iter().map(|p| p.0).collect()))
            .await
    }

    async fn replace_neighbour(&self, neighbour: &Neighbour) -> Result<()> {
        let target = format!("{} dev {}", neighbour.ip, neighbour.ifindex);
        let payload = RouteNetlinkMessage::NewNeighbour(neighbour_message(neighbour));
        self.request(
            Operation::ReplaceNeighbour,
            &target,
            payload,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(|_| ())
    }

    async fn list_neighbours(&self, ifindex: u32) -> Result<Vec<Neighbour>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let messages = self
                .list_neighbour_messages(Operation::ListNeighbours, family, ifindex)
                .await?;
            out.extend(messages.iter().filter_map(neighbour_from_message));
        }
        Ok(out)
    }

    async fn delete_neighbour(&self, ifindex: u32, ip: IpAddr) -> Result<()> {
        let neighbour = Neighbour {
            ifindex,
            ip,
            mac: None,
            permanent: false,
        };
        let target = format!("{ip} dev {ifindex}");
        let payload = RouteNetlinkMessage::DelNeighbour(neighbour_message(&neighbour));
        match self
            .request(Operation::DeleteNeighbour, &target, payload, 0)
            .await
        {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn replace_fdb(&self, entry: &FdbEntry) -> Result<()> {
        let target = format!("{} dev {}", entry.mac, entry.ifindex);
        let payload = RouteNetlinkMessage::NewNeighbour(fdb_message(entry));
        self.request(
            Operation::ReplaceFdb,
            &target,
            payload,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await
        .map(|_| ())
    }

    async fn list_fdb(&self, ifindex: u32) -> Result<Vec<FdbEntry>> {
        let messages = self
            .list_neighbour_messages(Operation::ListFdb, AddressFamily::Bridge, ifindex)
            .await?;
        Ok(messages.iter().filter_map(fdb_from_message).collect())
    }

    async fn delete_fdb(&self, entry: &FdbEntry) -> Result<()> {
        let target = format!("{} dev {}", entry.mac, entry.ifindex);
        let payload = RouteNetlinkMessage::DelNeighbour(fdb_message(entry));
        match self
            .request(Operation::DeleteFdb, &target, payload, 0)
            .await
        {
            Err(error) if error.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.in_namespace(move || sysctl::set_sysctl(&key, &value))
            .await
    }

    async fn get_sysctl(&self, key: &str) -> Result<String> {
        let key = key.to_string();
        self.in_namespace(move || sysctl::get_sysctl(&key)).await
    }
}
