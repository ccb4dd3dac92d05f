//! Socket options the protocols need and the standard library does not offer.
//!
//! Data flow: a caller holding a socket (a BGP session's connecting socket, the speaker's
//! listener) passes its raw descriptor; the option is set with one `setsockopt` call.
//! - `md5`: TCP MD5 signatures (RFC 2385), `set_tcp_md5`.
//! - `ttl`: GTSM (RFC 5082): TTL 255 sent, `IP_MINTTL` / `IPV6_MINHOPCOUNT`, and the TTL
//!   of an accepted connection's saved SYN.

mod md5;
mod ttl;

pub use md5::set_tcp_md5;
pub use ttl::{min_ttl, saved_syn_ttl, set_save_syn, set_send_ttl_255, set_ttl_security};
