//! Route monitor: RTM_NEWROUTE / RTM_DELROUTE notifications as a stream of [`RouteEvent`]s.
//!
//! A netlink socket joins the `RTNLGRP_IPV4_ROUTE` and `RTNLGRP_IPV6_ROUTE` multicast groups in
//! the handle's namespace (it is opened inside that namespace and stays bound to it). One tokio
//! task reads it through `AsyncFd`, decodes every message of each datagram, and forwards events
//! into a bounded channel. The reconciler reacts to `Deleted` of a route it owns by putting it
//! back at once, instead of waiting for the next full resync.
//!
//! When the kernel cannot queue a notification (the reader fell behind), the next read fails
//! with `ENOBUFS`: events were lost, so the task emits [`RouteEvent::Overflow`] and the receiver
//! must resync from `list_routes`. The task stops when the [`RouteWatch`] is dropped.

use std::io;

use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{Socket, SocketAddr};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::message::route_from_message;
use super::nexthop::{self, RTM_DELNEXTHOP, RTNLGRP_NEXTHOP};
use super::types::RouteEvent;

const RTNLGRP_IPV4_ROUTE: u32 = 7;
const RTNLGRP_IPV6_ROUTE: u32 = 11;
/// Events buffered between the socket task and the consumer.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;
const RECEIVE_BUFFER_BYTES: libc::c_int = 8 * 1024 * 1024;

/// A subscription to route changes; drop it to stop the monitor.
pub struct RouteWatch {
    receiver: mpsc::Receiver<RouteEvent>,
    task: Option<JoinHandle<()>>,
}

impl RouteWatch {
    /// Wraps a receiver fed by something other than a kernel socket (the fake).
    pub fn from_receiver(receiver: mpsc::Receiver<RouteEvent>) -> RouteWatch {
        RouteWatch {
            receiver,
            task: None,
        }
    }

    /// The next event; `None` once the monitor has stopped (socket error).
    pub async fn next(&mut self) -> Option<RouteEvent> {
        self.receiver.recv().await
    }

    /// An event if one is ready, without waiting.
    pub fn try_next(&mut self) -> Option<RouteEvent> {
        self.receiver.try_recv().ok()
    }
}

/// One kernel deletion monitor shared by several repair loops of one process: every extra
/// socket on the route groups costs the kernel a filter run per route change, on the hot path
/// of a full-table install. Each subscriber gets the deletions of its own protocols (and
/// `Overflow` when the shared socket lost events or the subscriber fell behind).
#[derive(Clone)]
pub struct SharedDeletions {
    events: tokio::sync::broadcast::Sender<RouteEvent>,
}

impl SharedDeletions {
    /// Fans out `watch` (a monitor of the deletions of every protocol any subscriber wants).
    pub fn start(mut watch: RouteWatch) -> SharedDeletions {
        let (events, _) = tokio::sync::broadcast::channel(CHANNEL_CAPACITY);
        let sender = events.clone();
        tokio::spawn(async move {
            while let Some(event) = watch.next().await {
                // No subscriber yet is fine: nothing of theirs can be lost before they start.
                let _ = sender.send(event);
            }
        });
        SharedDeletions { events }
    }

    /// The deletions of `protocols`, and every `Overflow`.
    pub fn subscribe(&self, protocols: &[super::RouteProtocol]) -> RouteWatch {
        use tokio::sync::broadcast::error::RecvError;
        let mut events = self.events.subscribe();
        let protocols = protocols.to_vec();
        let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(event) if event.needs_repair_by(&protocols) => event,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => RouteEvent::Overflow,
                    Err(RecvError::Closed) => return,
                };
                if sender.send(event).await.is_err() {
                    return;
                }
            }
        });
        RouteWatch {
            receiver,
            task: Some(task),
        }
    }
}

impl Drop for RouteWatch {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Opens the multicast socket in the calling thread's namespace (call inside `run_in_netns`);
/// with `nexthops`, it also joins the nexthop-object group (a kernel without nexthop objects
/// just has no such group to join).
pub fn open_monitor_socket(nexthops: bool) -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    let groups = (1 << (RTNLGRP_IPV4_ROUTE - 1)) | (1 << (RTNLGRP_IPV6_ROUTE - 1));
    socket.bind(&SocketAddr::new(0, groups))?;
    if nexthops {
        if let Err(error) = socket.add_membership(RTNLGRP_NEXTHOP) {
            tracing::debug!(%error, "no nexthop notifications on this kernel");
        }
    }
    let size = RECEIVE_BUFFER_BYTES;
    // SAFETY: `size` is a live c_int and its size is passed alongside.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced < 0 {
        socket.set_rx_buf_sz(RECEIVE_BUFFER_BYTES as usize)?;
    }
    socket.set_non_blocking(true)?;
    Ok(socket)
}

/// Makes the kernel deliver to `socket` only RTM_DELROUTE and RTM_DELNEXTHOP notifications of
/// `protocols` (a classic BPF socket filter over the netlink header and `rtmsg` / `nhmsg`):
/// everything else is dropped before it is queued, so a repair loop is not woken a million
/// times while a full table is installed.
pub fn attach_deletion_filter(socket: &Socket, protocols: &[u8]) -> io::Result<()> {
    const RTM_DELROUTE: u16 = 25;
    // `ldh` loads in network byte order; nlmsg_type is in host order.
    let wire = |message_type: u16| u32::from(u16::from_be_bytes(message_type.to_ne_bytes()));
    let count = u8::try_from(protocols.len())
        .ok()
        .filter(|n| *n < 100)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "too many protocols"))?;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    let (ld_h, ld_b, jeq, ret) = (
        libc::BPF_LD | libc::BPF_H | libc::BPF_ABS,
        libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
        libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
        libc::BPF_RET | libc::BPF_K,
    );
    // Loads the protocol byte at `offset`, accepts when it is one of `protocols`, else drops.
    let protocol_block = |offset: u32| {
        let mut block = vec![stmt(ld_b, offset)];
        for (i, protocol) in protocols.iter().enumerate() {
            // Match: jump over the remaining comparisons and "drop" to "accept".
            block.push(jump(jeq, u32::from(*protocol), count - i as u8, 0));
        }
        block.push(stmt(ret, 0)); // drop
        block.push(stmt(ret, u32::MAX)); // accept
        block
    };
    // rtm_protocol at 16 (nlmsghdr) + 5; nh_protocol at 16 + 2.
    let routes = protocol_block(21);
    let nexthops = protocol_block(18);
    let mut program = vec![
        stmt(ld_h, 4),                                              // nlmsg_type
        jump(jeq, wire(RTM_DELROUTE), 2, 0),                        // → routes
        jump(jeq, wire(RTM_DELNEXTHOP), 1 + routes.len() as u8, 0), // → nexthops
        stmt(ret, 0),                                               // anything else: drop
    ];
    program.extend(routes);
    program.extend(nexthops);
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points to `program`, alive for the call; the kernel copies it.
    let result = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the reading task on an opened monitor socket (must run inside a tokio runtime).
pub fn start_watch(socket: Socket) -> io::Result<RouteWatch> {
    // SAFETY: `Socket` owns its fd and closes it only when dropped, which happens when the
    // AsyncFd (which owns the Socket) is dropped; the fd never changes meanwhile.
    let fd = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }?;
    let (sender, receiver) = mpsc::channel(CHANNEL_CAPACITY);
    let task = tokio::spawn(read_events(fd, sender));
    Ok(RouteWatch {
        receiver,
        task: Some(task),
    })
}

async fn read_events(fd: AsyncFd<Socket>, sender: mpsc::Sender<RouteEvent>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(1 << 20);
    loop {
        let mut guard = match fd.readable().await {
            Ok(guard) => guard,
            Err(error) => {
                tracing::warn!(%error, "route monitor: socket poll failed, stopping");
                return;
            }
        };
        buffer.clear();
        let received = guard.try_io(|inner| inner.get_ref().recv(&mut buffer, 0));
        let events = match received {
            Err(_would_block) => continue,
            Ok(Ok(length)) => decode_datagram(&buffer[..length.min(buffer.len())]),
            Ok(Err(error)) if error.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!("route monitor: kernel dropped notifications, resync needed");
                vec![RouteEvent::Overflow]
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "route monitor: receive failed, stopping");
                return;
            }
        };
        for event in events {
            if sender.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Decodes every route notification in one datagram; other messages are skipped.
pub fn decode_datagram(datagram: &[u8]) -> Vec<RouteEvent> {
    let mut events = Vec::new();
    let mut offset = 0;
    while let Some(header) = datagram.get(offset..offset + 4) {
        let length = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(bytes) = datagram
            .get(offset..offset + length)
            .filter(|_| length >= 16)
        else {
            tracing::warn!(length, "route monitor: truncated message");
            break;
        };
        offset += (length + 3) & !3;
        if u16::from_ne_bytes([bytes[4], bytes[5]]) == RTM_DELNEXTHOP {
            events.extend(nexthop::parse(bytes).map(|n| RouteEvent::NexthopDeleted(n.protocol)));
            continue;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes) {
            Ok(message) => {
                if let NetlinkPayload::InnerMessage(inner) = message.payload {
                    match inner {
                        RouteNetlinkMessage::NewRoute(route) => {
                            events.extend(route_from_message(&route).map(RouteEvent::Added))
                        }
                        RouteNetlinkMessage::DelRoute(route) => {
                            events.extend(route_from_message(&route).map(RouteEvent::Deleted))
                        }
                        _ => {}
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "route monitor: undecodable message"),
        }
    }
    events
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::netlink::message::{request_message, route_message};
    use crate::netlink::proto::RouteProtocol;
    use crate::netlink::types::Route;

    #[test]
    fn decodes_every_route_message_of_a_datagram() {
        let route = Route::blackhole("10.9.0.0/26".parse().unwrap(), RouteProtocol::BLACKHOLE);
        let mut datagram = Vec::new();
        for payload in [
            RouteNetlinkMessage::NewRoute(route_message(&route)),
            RouteNetlinkMessage::DelRoute(route_message(&route)),
        ] {
            let message = request_message(payload, 0, 0);
            let start = datagram.len();
            datagram.resize(start + message.buffer_len(), 0);
            message.serialize(&mut datagram[start..]);
        }
        assert_eq!(
            decode_datagram(&datagram),
            vec![RouteEvent::Added(route.clone()), RouteEvent::Deleted(route)]
        );
        assert!(decode_datagram(&datagram[..10]).is_empty());
    }

    #[tokio::test]
    async fn shared_deletions_give_each_subscriber_its_protocols_and_every_overflow() {
        let (feed, receiver) = mpsc::channel(16);
        let shared = SharedDeletions::start(RouteWatch::from_receiver(receiver));
        let mut bgp = shared.subscribe(&[RouteProtocol::BGP]);
        let mut workloads = shared.subscribe(&[RouteProtocol::WORKLOAD]);
        let route = |p| Route::blackhole("10.9.0.0/26".parse().unwrap(), p);
        for event in [
            RouteEvent::Deleted(route(RouteProtocol::WORKLOAD)),
            RouteEvent::Added(route(RouteProtocol::BGP)),
            RouteEvent::Deleted(route(RouteProtocol::BGP)),
            RouteEvent::Overflow,
        ] {
            feed.send(event).await.unwrap();
        }
        assert_eq!(
            bgp.next().await,
            Some(RouteEvent::Deleted(route(RouteProtocol::BGP)))
        );
        assert_eq!(bgp.next().await, Some(RouteEvent::Overflow));
        assert_eq!(
            workloads.next().await,
            Some(RouteEvent::Deleted(route(RouteProtocol::WORKLOAD)))
        );
        assert_eq!(workloads.next().await, Some(RouteEvent::Overflow));
    }
}
