//! NLRI prefixes: length in bits, then just enough bytes (RFC 4271 §4.3, RFC 4760 §5).
//!
//! Decoding rejects a length above 32 (IPv4) or 128 (IPv6) and a prefix that runs past the
//! buffer; bits beyond the prefix length are cleared (RFC 4271 says they are irrelevant).
//! Add-path (RFC 7911) is not negotiated, so there is no path identifier.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};

/// Which address family a run of prefixes belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixFamily {
    Ipv4,
    Ipv6,
}

impl PrefixFamily {
    /// Maximum prefix length in bits.
    fn max_len(self) -> u8 {
        match self {
            PrefixFamily::Ipv4 => 32,
            PrefixFamily::Ipv6 => 128,
        }
    }

    /// The family of a prefix.
    pub fn of(prefix: &IpNetwork) -> Self {
        match prefix {
            IpNetwork::V4(_) => PrefixFamily::Ipv4,
            IpNetwork::V6(_) => PrefixFamily::Ipv6,
        }
    }
}

/// A prefix did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixError;

/// Decode every prefix in `buf`.
pub fn decode_prefixes(buf: &[u8], family: PrefixFamily) -> Result<Vec<IpNetwork>, PrefixError> {
    let mut prefixes = Vec::new();
    let mut rest = buf;
    while let Some((&bits, after)) = rest.split_first() {
        if bits > family.max_len() {
            return Err(PrefixError);
        }
        let nbytes = usize::from(bits).div_ceil(8);
        let bytes = after.get(..nbytes).ok_or(PrefixError)?;
        prefixes.push(build_prefix(family, bits, bytes)?);
        rest = after.get(nbytes..).unwrap_or_default();
    }
    Ok(prefixes)
}

/// A network from its significant bytes, host bits cleared.
fn build_prefix(family: PrefixFamily, bits: u8, bytes: &[u8]) -> Result<IpNetwork, PrefixError> {
    match family {
        PrefixFamily::Ipv4 => {
            let mut octets = [0u8; 4];
            for (dst, src) in octets.iter_mut().zip(bytes) {
                *dst = *src;
            }
            let raw = u32::from_be_bytes(octets);
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            Ipv4Network::new(Ipv4Addr::from(raw & mask), bits)
                .map(IpNetwork::V4)
                .map_err(|_| PrefixError)
        }
        PrefixFamily::Ipv6 => {
            let mut octets = [0u8; 16];
            for (dst, src) in octets.iter_mut().zip(bytes) {
                *dst = *src;
            }
            let raw = u128::from_be_bytes(octets);
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            Ipv6Network::new(Ipv6Addr::from(raw & mask), bits)
                .map(IpNetwork::V6)
                .map_err(|_| PrefixError)
        }
    }
}

/// Bytes one prefix takes on the wire.
pub fn encoded_prefix_len(prefix: &IpNetwork) -> usize {
    1 + usize::from(prefix.prefix()).div_ceil(8)
}

/// Append one prefix (host bits cleared).
pub fn encode_prefix(prefix: &IpNetwork, out: &mut Vec<u8>) {
    let bits = prefix.prefix();
    let nbytes = usize::from(bits).div_ceil(8);
    out.push(bits);
    match prefix.network() {
        IpAddr::V4(addr) => out.extend(addr.octets().iter().take(nbytes)),
        IpAddr::V6(addr) => out.extend(addr.octets().iter().take(nbytes)),
    }
}
