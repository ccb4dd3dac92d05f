//! `routectl`: the operator CLI. Arguments (clap), dispatch, output formats and exit codes.
//!
//! ```text
//!  main (src/bin/routectl.rs) ─> clap ─> run ─> commands::dispatch ─> ipam / datastore / api client
//!                                          └─ Err(CliError): printed once, exit code per kind
//! ```
//! Exit codes ([`error::exit`], docs/operations.md "routectl exit codes"): 0 success,
//! 1 failed (also `ipam check` finding inconsistencies), 2 usage (clap's own code for bad
//! arguments), 3 invalid input, 4 not found, 5 conflict, 6 no address left, 7 datastore
//! unavailable, 8 agent unreachable.

mod bfd;
mod bgp;
mod commands;
pub mod error;
mod status;
pub mod table;

use crate::datastore::{DatastoreConfig, TlsFiles, DEFAULT_PREFIX, DEFAULT_URL};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::IpAddr;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "routectl",
    version,
    about = "Operate a routed cluster: pools, IPAM, nodes, BGP status"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Datastore URL: etcd://HOST:PORT[,HOST:PORT], etcds://... (TLS) or sqlite:///PATH.
    #[arg(long, global = true, env = "ROUTED_DATASTORE", default_value = DEFAULT_URL)]
    pub datastore: String,
    /// Key prefix inside the datastore.
    #[arg(long, global = true, env = "ROUTED_DATASTORE_PREFIX", default_value = DEFAULT_PREFIX)]
    pub datastore_prefix: String,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, global = true, env = "ROUTED_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<String>,
    /// Client certificate (PEM) presented to etcd.
    #[arg(long, global = true, env = "ROUTED_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<String>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, global = true, env = "ROUTED_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<String>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

impl GlobalArgs {
    pub fn datastore_config(&self) -> DatastoreConfig {
        DatastoreConfig {
            url: self.datastore.clone(),
            prefix: self.datastore_prefix.clone(),
            tls: TlsFiles {
                ca_file: self.etcd_ca_file.clone(),
                cert_file: self.etcd_cert_file.clone(),
                key_file: self.etcd_key_file.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// IP pools: create, list, change, delete.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Address management: allocate, release, show, check, configure.
    #[command(subcommand)]
    Ipam(IpamCommand),
    /// Nodes registered by their agents.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Explicit BGP peers (ToR routers, route reflectors).
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Cluster-wide BGP settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// BGP sessions of the local agent (like `calicoctl node status`).
    Status {
        /// The agent's local API socket.
        #[arg(long, env = "ROUTED_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
    },
    /// Datastore and IPAM benchmarks (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// BFD sessions of the local agent.
    #[command(subcommand)]
    Bfd(BfdCommand),
}

#[derive(Debug, Subcommand)]
pub enum BfdCommand {
    /// Every BFD session: state, intervals in force, detection time; and dropped datagrams.
    Status {
        /// The agent's local API socket.
        #[arg(long, env = "ROUTED_SOCKET", default_value = crate::api::DEFAULT_SOCKET)]
        socket: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        name: String,
        #[arg(long)]
        cidr: String,
        /// Prefix length of each block (default 26 for IPv4, 122 for IPv6).
        #[arg(long)]
        block_size: Option<u8>,
        /// Never | Always | CrossSubnet
        #[arg(long, default_value = "Never")]
        ipip_mode: String,
        /// Never | Always | CrossSubnet
        #[arg(long, default_value = "Never")]
        vxlan_mode: String,
        #[arg(long)]
        nat_outgoing: bool,
        #[arg(long)]
        disabled: bool,
        #[arg(long)]
        disable_bgp_export: bool,
    },
    /// List pools.
    List,
    /// Change a pool's modes or flags (CIDR and block size are immutable).
    Set {
        name: String,
        #[arg(long)]
        ipip_mode: Option<String>,
        #[arg(long)]
        vxlan_mode: Option<String>,
        #[arg(long)]
        nat_outgoing: Option<bool>,
        #[arg(long)]
        disabled: Option<bool>,
        #[arg(long)]
        disable_bgp_export: Option<bool>,
    },
    /// Delete a pool (refused while addresses are allocated from it, unless --force).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Allocate addresses for a handle on a node and print them.
    Allocate {
        #[arg(long)]
        node: String,
        #[arg(long)]
        handle: String,
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Only from these pools (repeatable).
        #[arg(long = "pool")]
        pools: Vec<String>,
        /// Allocate IPv6 instead of IPv4.
        #[arg(long)]
        ipv6: bool,
    },
    /// Release addresses: by handle, by address, or give back empty blocks.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["handle", "ip", "empty_blocks"])))]
    Release {
        #[arg(long)]
        handle: Option<String>,
        #[arg(long)]
        ip: Option<IpAddr>,
        /// With --ip: only if the address still carries this sequence number.
        #[arg(long, requires = "ip")]
        sequence: Option<u64>,
        /// Release blocks that hold no address (of --node, or of every node).
        #[arg(long)]
        empty_blocks: bool,
        #[arg(long, requires = "empty_blocks")]
        node: Option<String>,
    },
    /// Show blocks: owner, used and free addresses.
    Show {
        #[arg(long)]
        node: Option<String>,
    },
    /// Check every IPAM record for inconsistencies (exit 1 when any is found).
    Check,
    /// Show or change IPAM settings.
    Config {
        /// on: nodes never borrow from other nodes' blocks.
        #[arg(long)]
        strict_affinity: Option<OnOff>,
        /// Most blocks one node may claim (0: no limit).
        #[arg(long)]
        max_blocks_per_host: Option<u32>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes.
    List,
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Create a peer: global, or for one node with --node.
    Create {
        name: String,
        #[arg(long)]
        peer_ip: IpAddr,
        #[arg(long = "as")]
        as_number: u32,
        #[arg(long)]
        node: Option<String>,
        /// File holding the TCP MD5 password (kept out of shell history).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        hold_time: Option<u16>,
        #[arg(long)]
        source_address: Option<IpAddr>,
        #[command(flatten)]
        bfd: bfd::BfdArgs,
        /// Most prefixes the peer may send (none: no limit).
        #[arg(long)]
        max_prefixes: Option<u32>,
        /// Past --max-prefixes: warn (log once) or restart (Cease/1, the default).
        #[arg(long, value_enum, requires = "max_prefixes")]
        max_prefixes_action: Option<crate::model::PrefixLimitAction>,
        /// Keepalive interval, seconds, when shorter than a third of the hold time.
        #[arg(long)]
        keepalive_time: Option<u16>,
        /// Longest time to keep the peer's routes when it restarts gracefully, seconds.
        #[arg(long)]
        max_restart_time: Option<u32>,
        /// Our AS on this session instead of the cluster's (Calico's localASNumber).
        #[arg(long = "local-as")]
        local_as_number: Option<u32>,
    },
    /// List peers.
    List,
    /// Delete a peer.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Change the cluster's AS, node-to-node mesh or BGP port.
    Set {
        #[arg(long = "as")]
        as_number: Option<u32>,
        #[arg(long)]
        mesh: Option<OnOff>,
        #[arg(long)]
        listen_port: Option<u16>,
        /// BFD on the node-to-node mesh sessions.
        #[command(flatten)]
        bfd: bfd::BfdArgs,
    },
    /// Show the BGP configuration.
    Get,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Allocate COUNT single-address handles per worker on NODE, then release them.
    Ipam {
        #[arg(long)]
        node: String,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value = "bench")]
        handle_prefix: String,
        /// Keep the addresses (print them) instead of releasing.
        #[arg(long, conflicts_with = "release_only")]
        keep: bool,
        /// One allocator per worker (like separate processes) instead of one shared allocator.
        #[arg(long)]
        independent: bool,
        /// Only release what an earlier `--keep` run with the same prefix allocated.
        #[arg(long)]
        release_only: bool,
    },
    /// Raw single-key compare-and-swap transactions.
    Cas {
        #[arg(long, default_value_t = 1)]
        workers: usize,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Every worker increments this one counter key (checks that no update is lost).
        #[arg(long)]
        shared_key: Option<String>,
    },
}

/// Runs a parsed command line; prints the error, if any, once; returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match commands::dispatch(&cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("routectl: error: {e}");
            e.exit()
        }
    }
}
