//! Benchmark drivers that are neither datastore nor IPAM: `bgp_sim`, the BGP peer simulator
//! behind `routectl bench bgp-peers` (tests/bench/rr_scale.sh, the reflector scale test).

pub mod bgp_sim;
