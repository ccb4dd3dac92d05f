//! TCP MD5 signatures (RFC 2385): the `TCP_MD5SIG` socket option.
//!
//! The BGP session sets the key on its connecting socket, the speaker on the listening
//! socket per peer address. Linux only (`struct tcp_md5sig` from linux/tcp.h).

use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: SockaddrStorage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; 80],
}

/// `struct __kernel_sockaddr_storage`: 128 bytes, 8-byte aligned.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// Set (or, with `None`, remove) the TCP MD5 key for `peer` on a socket (RFC 2385).
/// `socket_is_v6`: IPv4 peers of an IPv6 socket are given as IPv4-mapped addresses.
pub fn set_tcp_md5(
    fd: RawFd,
    peer: IpAddr,
    key: Option<&str>,
    socket_is_v6: bool,
) -> io::Result<()> {
    let key = key.map(str::as_bytes).unwrap_or_default();
    let mut sig = TcpMd5Sig {
        addr: SockaddrStorage([0; 128]),
        flags: 0,
        prefixlen: 0,
        keylen: u16::try_from(key.len()).unwrap_or(u16::MAX),
        ifindex: 0,
        key: [0; 80],
    };
    sig.key
        .get_mut(..key.len())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "MD5 key longer than 80 bytes"))?
        .copy_from_slice(key);
    let peer = match (peer, socket_is_v6) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        (other, _) => other,
    };
    let bytes = &mut sig.addr.0;
    match peer {
        IpAddr::V4(v4) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            bytes[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            bytes[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            bytes[8..24].copy_from_slice(&v6.octets());
        }
    }
    // SAFETY: `sig` is a valid, fully initialised `struct tcp_md5sig` that outlives the
    // call, and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_MD5SIG,
            std::ptr::from_ref(&sig).cast::<libc::c_void>(),
            std::mem::size_of::<TcpMd5Sig>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
