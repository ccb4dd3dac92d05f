//! GTSM (RFC 5082): TTL 255 sent, a minimum TTL (hop limit) received, and the TTL of an
//! accepted connection's SYN.
//!
//! A connecting socket gets `set_ttl_security` before `connect`, so the peer's SYN-ACK is
//! already checked by the kernel (`IP_MINTTL` / `IPV6_MINHOPCOUNT`; drops are counted as
//! `TcpExtTCPMinTTLDrop`). A listening socket is shared by GTSM and plain peers, so it only
//! sends TTL 255 (its SYN-ACKs) and keeps each connection's SYN (`TCP_SAVE_SYN`); the session
//! reads the SYN's TTL of an accepted connection with `saved_syn_ttl`, refuses it when it is
//! below the minimum, and sets the minimum on the accepted socket for everything after.

use std::io;
use std::os::fd::RawFd;

/// The TTL GTSM sends (RFC 5082 §3).
pub const GTSM_TTL: u8 = 255;

/// The lowest TTL a peer `hops` away arrives with: 256 − hops (`hops` ≥ 1).
pub fn min_ttl(hops: u8) -> u8 {
    // 256 - hops for hops in 1..=255 is 1..=255; 0 hops is treated as 1.
    GTSM_TTL - hops.max(1) + 1
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int that outlives the call, and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::from_ref(&value).cast::<libc::c_void>(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Send with TTL (hop limit) 255. `ipv6`: the socket is an IPv6 socket (its IPv4-mapped
/// peers get the IPv4 option too).
pub fn set_send_ttl_255(fd: RawFd, ipv6: bool) -> io::Result<()> {
    let ttl = libc::c_int::from(GTSM_TTL);
    if ipv6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, ttl)?;
    }
    setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_TTL, ttl).or_else(|e| {
        if ipv6 {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// GTSM on a socket: TTL 255 sent, and nothing accepted below `min_ttl(hops)`.
pub fn set_ttl_security(fd: RawFd, ipv6: bool, hops: u8) -> io::Result<()> {
    set_send_ttl_255(fd, ipv6)?;
    let min = libc::c_int::from(min_ttl(hops));
    if ipv6 {
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, min)?;
        // IPv4-mapped peers of an IPv6 socket are checked by the IPv4 option.
        let _ = setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, min);
        Ok(())
    } else {
        setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_MINTTL, min)
    }
}

/// Keep each incoming connection's SYN (headers) for `saved_syn_ttl`.
pub fn set_save_syn(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_SAVE_SYN, 1)
}

/// The TTL (IPv4) or hop limit (IPv6) the accepted connection's SYN arrived with; `None`
/// when no SYN was saved (the listener did not have `TCP_SAVE_SYN` yet, or it was read).
pub fn saved_syn_ttl(fd: RawFd) -> io::Result<Option<u8>> {
    let mut buffer = [0u8; 512];
    let mut len = buffer.len() as libc::socklen_t;
    // SAFETY: `buffer` is writable for `len` bytes and `len` is a valid socklen_t; the
    // kernel writes at most `len` bytes and stores the length it wrote in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_SAVED_SYN,
            buffer.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        let error = io::Error::last_os_error();
        // ENOENT: nothing saved.
        return match error.raw_os_error() {
            Some(libc::ENOENT) => Ok(None),
            _ => Err(error),
        };
    }
    let header = buffer.get(..len as usize).unwrap_or_default();
    Ok(syn_ttl(header))
}

/// The TTL of an IP header: byte 8 of IPv4, byte 7 (hop limit) of IPv6.
fn syn_ttl(header: &[u8]) -> Option<u8> {
    match header.first()? >> 4 {
        4 => header.get(8).copied(),
        6 => header.get(7).copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    #[test]
    fn min_ttl_is_256_minus_hops() {
        assert_eq!(min_ttl(1), 255);
        assert_eq!(min_ttl(2), 254);
        assert_eq!(min_ttl(255), 1);
        assert_eq!(min_ttl(0), 255);
    }

    #[test]
    fn ttl_is_read_from_ipv4_and_ipv6_headers() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        v4[8] = 254;
        assert_eq!(syn_ttl(&v4), Some(254));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        v6[7] = 255;
        assert_eq!(syn_ttl(&v6), Some(255));
        assert_eq!(syn_ttl(&[]), None);
        assert_eq!(syn_ttl(&[0x45, 0, 0]), None);
        assert_eq!(syn_ttl(&[0x20; 40]), None);
    }

    /// Loopback: a SYN sent with TTL 255 is saved by the listener and read back as 255 once;
    /// with GTSM for 1 hop on both ends data still flows (loopback keeps TTL 255).
    #[test]
    fn saved_syn_of_a_loopback_connection_has_the_ttl_it_was_sent_with() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_save_syn(listener.as_raw_fd()).unwrap();
        set_send_ttl_255(listener.as_raw_fd(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let socket = connect_with_gtsm(addr);
        let (mut accepted, _) = listener.accept().unwrap();
        assert_eq!(saved_syn_ttl(accepted.as_raw_fd()).unwrap(), Some(255));
        assert_eq!(
            saved_syn_ttl(accepted.as_raw_fd()).unwrap(),
            None,
            "read once"
        );
        set_ttl_security(accepted.as_raw_fd(), false, 1).unwrap();
        let mut socket = socket;
        socket.write_all(b"ok").unwrap();
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ok");
    }

    /// The same over IPv6 loopback: the hop limit of the saved SYN, IPV6_MINHOPCOUNT set.
    #[test]
    fn saved_syn_of_an_ipv6_loopback_connection_has_hop_limit_255() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            panic!("no IPv6 loopback on this machine");
        };
        set_save_syn(listener.as_raw_fd()).unwrap();
        set_send_ttl_255(listener.as_raw_fd(), true).unwrap();
        let mut socket = connect_with_gtsm(listener.local_addr().unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        assert_eq!(saved_syn_ttl(accepted.as_raw_fd()).unwrap(), Some(255));
        set_ttl_security(accepted.as_raw_fd(), true, 1).unwrap();
        socket.write_all(b"v6").unwrap();
        let mut got = [0u8; 2];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"v6");
    }

    /// A connected stream whose SYN went out with TTL 255 (set before connect).
    fn connect_with_gtsm(addr: std::net::SocketAddr) -> TcpStream {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let socket = match addr {
                std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4().unwrap(),
                std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6().unwrap(),
            };
            set_ttl_security(socket.as_raw_fd(), addr.is_ipv6(), 1).unwrap();
            let stream = socket.connect(addr).await.unwrap();
            stream.into_std().unwrap()
        })
    }
}
