//! Socket options the protocols need and the standard library does not offer.
//!
//! Data flow: a caller holding a socket (a BGP session's connecting socket, the speaker's
//! listener) passes its raw descriptor; the option is set with one `setsockopt` call.
//! - `md5`: TCP MD5 signatures (RFC 2385), `set_tcp_md5`.

mod md5;

pub use md5::set_tcp_md5;
