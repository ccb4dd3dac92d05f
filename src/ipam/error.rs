//! IPAM errors, one enum for the whole layer (allocation, release, pools, configuration): each
//! names the node, handle, pool or address it concerns and says what to do. The callers map it
//! at their edge: the local API server to an HTTP status and wire kind, routectl to an exit code.

use crate::datastore::DatastoreError;
use crate::model::ValidationError;
use std::net::IpAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IpamError {
    #[error(
        "no enabled {family} pool to allocate from{detail}: create one with `routectl pool create`"
    )]
    NoPools {
        family: &'static str,
        detail: String,
    },
    #[error("no free address for node {node}: {reason}")]
    Exhausted { node: String, reason: String },
    #[error("{ip} is not allocated")]
    NotAllocated { ip: IpAddr },
    #[error("{ip} is not inside any block or pool")]
    UnknownAddress { ip: IpAddr },
    #[error(
        "refusing to release {ip}: sequence number {given} is stale (the address was handed out \
         again as sequence {current}, to handle {handle})"
    )]
    StaleSequence {
        ip: IpAddr,
        given: u64,
        current: u64,
        handle: String,
    },
    #[error("pool {pool} not found")]
    PoolNotFound { pool: String },
    #[error("pool {pool} already exists")]
    PoolExists { pool: String },
    #[error(
        "pool {pool} still has {addresses} allocated address(es) in {blocks} block(s): release them \
         (`routectl ipam show`, `routectl ipam release`) or delete with --force"
    )]
    PoolInUse {
        pool: String,
        addresses: usize,
        blocks: usize,
    },
    #[error("gave up on {what} after {attempts} attempts: too many concurrent changes")]
    TooManyRetries { what: String, attempts: usize },
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Datastore(#[from] DatastoreError),
}

impl IpamError {
    /// True when the datastore was unreachable (CNI maps this to "try again later").
    pub fn is_unavailable(&self) -> bool {
        matches!(self, IpamError::Datastore(e) if e.is_unavailable())
    }
}
