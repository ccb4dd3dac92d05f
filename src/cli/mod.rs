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
mod cluster;
mod commands;
pub mod error;
mod node;
pub mod resources;
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
#[command(next_help_heading = "Global options")]
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
    /// A table with every field (`routectl get`); other commands print their table.
    Wide,
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
        /// Show another node's sessions, as its agent published them in the datastore.
        #[arg(long)]
        node: Option<String>,
    },
    /// The whole cluster's view, from the status every agent publishes.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Datastore and IPAM benchmarks (see docs/benchmarks.md).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create or update resources from YAML/JSON documents (like `calicoctl apply`).
    Apply(WriteArgs),
    /// Create resources from documents; fails for any that exists already.
    Create(WriteArgs),
    /// Replace existing resources with documents; fails for any that does not exist.
    Replace(WriteArgs),
    /// Print resources as documents (`-o yaml` prints what `apply -f` takes back).
    Get {
        /// ippool, bgppeer, bgpconfiguration, node or ipamconfig (any case, singular or plural).
        kind: String,
        /// Only this object (all of the kind when omitted).
        name: Option<String>,
    },
    /// Delete resources named on the command line or in a file.
    Delete(DeleteArgs),
    /// Print a shell completion script (e.g. `routectl completion bash > /etc/bash_completion.d/routectl`).
    Completion {
        /// The shell the script is for.
        shell: CompletionShell,
    },
    /// BFD sessions of the local agent.
    #[command(subcommand)]
    Bfd(BfdCommand),
}

/// `routectl cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// One row per node (sessions up/total, routes programmed/expected, status age), then the
    /// problems found: one-sided sessions, blocks missing from a kernel, expired statuses.
    Status,
}

/// Shells `routectl completion` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Options of `routectl apply`, `create` and `replace`.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// File of YAML or JSON documents (several separated by `---`), or `-` for standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    /// Check every document against the datastore and say what would change; write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `routectl delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// Kind of the object to delete (ippool, bgppeer, node, ...).
    #[arg(requires = "name", conflicts_with = "file")]
    pub kind: Option<String>,
    /// Name of the object to delete.
    pub name: Option<String>,
    /// Delete the objects the documents in FILE (or `-`) name.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: Option<String>,
    /// Check what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
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
        /// Name of the new pool (lower-case letters, digits, '-' and '.').
        name: String,
        /// The pool's network, e.g. 10.244.0.0/16 or fd00:10::/48.
        #[arg(long)]
        cidr: String,
        /// Prefix length of each block (default 26 for IPv4, 122 for IPv6).
        #[arg(long)]
        block_size: Option<u8>,
        /// IPIP encapsulation: Never | Always | CrossSubnet.
        #[arg(long, default_value = "Never")]
        ipip_mode: String,
        /// VXLAN encapsulation: Never | Always | CrossSubnet.
        #[arg(long, default_value = "Never")]
        vxlan_mode: String,
        /// Masquerade pod traffic leaving the pools (SNAT to the node address).
        #[arg(long)]
        nat_outgoing: bool,
        /// Create the pool disabled: nothing is allocated from it.
        #[arg(long)]
        disabled: bool,
        /// Do not advertise the pool's blocks over BGP.
        #[arg(long)]
        disable_bgp_export: bool,
    },
    /// List pools.
    List,
    /// Change a pool's modes or flags (CIDR and block size are immutable).
    Set {
        /// Name of the pool to change.
        name: String,
        /// IPIP encapsulation: Never | Always | CrossSubnet.
        #[arg(long)]
        ipip_mode: Option<String>,
        /// VXLAN encapsulation: Never | Always | CrossSubnet.
        #[arg(long)]
        vxlan_mode: Option<String>,
        /// true: masquerade pod traffic leaving the pools.
        #[arg(long)]
        nat_outgoing: Option<bool>,
        /// true: allocate nothing more from the pool (existing addresses stay).
        #[arg(long)]
        disabled: Option<bool>,
        /// true: do not advertise the pool's blocks over BGP.
        #[arg(long)]
        disable_bgp_export: Option<bool>,
    },
    /// Delete a pool (refused while addresses are allocated from it, unless --force).
    Delete {
        /// Name of the pool to delete.
        name: String,
        /// Delete even while addresses are allocated (their blocks and records go too).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Allocate addresses for a handle on a node and print them.
    Allocate {
        /// Node whose blocks the addresses come from.
        #[arg(long)]
        node: String,
        /// Handle the addresses are recorded under (release them with --handle).
        #[arg(long)]
        handle: String,
        /// How many addresses.
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
        /// Release every address of this handle.
        #[arg(long)]
        handle: Option<String>,
        /// Release this one address.
        #[arg(long)]
        ip: Option<IpAddr>,
        /// With --ip: only if the address still carries this sequence number.
        #[arg(long, requires = "ip")]
        sequence: Option<u64>,
        /// Release blocks that hold no address (of --node, or of every node).
        #[arg(long)]
        empty_blocks: bool,
        /// With --empty-blocks: only this node's blocks.
        #[arg(long, requires = "empty_blocks")]
        node: Option<String>,
    },
    /// Show blocks: owner, used and free addresses.
    Show {
        /// Only the blocks affine to this node.
        #[arg(long)]
        node: Option<String>,
    },
    /// Check every IPAM record for inconsistencies (exit 1 when any is found).
    Check,
    /// Release leaked addresses and blocks: what two scans a grace period apart both find
    /// (addresses and claims of nodes without a Node record, handles no container holds per
    /// the node's last CNI GC, empty blocks still affine).
    Repair {
        /// Report what would be released; release nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds between the two scans; a leak must be seen in both.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        grace_period: u64,
    },
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
    /// Set labels (key=value) or remove them (key-), as kubectl does.
    Label {
        /// The node.
        name: String,
        /// key=value to set, key- to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },
    /// Change a node's BGP settings (its route-reflector cluster ID).
    Set {
        /// The node.
        name: String,
        /// Make the node a route reflector with this cluster ID.
        #[arg(long, value_name = "A.B.C.D", conflicts_with = "no_rr_cluster_id")]
        rr_cluster_id: Option<std::net::Ipv4Addr>,
        /// Clear the cluster ID: the node is no longer a route reflector.
        #[arg(long, required_unless_present = "rr_cluster_id")]
        no_rr_cluster_id: bool,
    },
    /// Decommission a node: release its addresses and blocks, delete its peers and record.
    /// Refused while its agent answers, unless --force; run it again to finish an interrupted one.
    Delete {
        /// Name of the node to remove.
        name: String,
        /// Remove it even though its agent still answers.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Create a peer: global, or for one node with --node, or for the nodes --node-selector
    /// selects; with the address --peer-ip or every node --peer-selector selects.
    Create {
        /// Name of the new peer.
        name: String,
        /// The peer's address.
        #[arg(long, required_unless_present = "peer_selector")]
        peer_ip: Option<IpAddr>,
        /// Peer with every node this selects (e.g. "route-reflector == 'true'").
        #[arg(long, conflicts_with = "peer_ip")]
        peer_selector: Option<String>,
        /// The peer's AS number.
        #[arg(long = "as")]
        as_number: u32,
        /// Only this node peers with it (default: every node).
        #[arg(long)]
        node: Option<String>,
        /// Only the nodes this selects have the peering (e.g. "all()").
        #[arg(long, conflicts_with = "node")]
        node_selector: Option<String>,
        /// File holding the TCP MD5 password (kept out of shell history).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// The peer's BGP port (default 179).
        #[arg(long)]
        port: Option<u16>,
        /// Hold time to offer, seconds (0, or at least 3; default 90).
        #[arg(long)]
        hold_time: Option<u16>,
        /// Local address the session is opened from (default: the node address).
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
        /// GTSM (RFC 5082): the peer is at most N hops away; TTL 255 sent, below 256-N refused.
        #[arg(long)]
        ttl_security: Option<u8>,
        /// Accept routes whose AS path holds our AS up to N times (BIRD's allow local as N).
        #[arg(long)]
        num_allowed_local_as_numbers: Option<u32>,
        /// NEXT_HOP of routes sent to the peer: auto (self to eBGP), self, or keep.
        #[arg(long, value_enum, ignore_case = true)]
        next_hop_mode: Option<crate::model::NextHopMode>,
    },
    /// List peers.
    List,
    /// Delete a peer.
    Delete {
        /// Name of the peer to delete.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Change the cluster's AS, node-to-node mesh or BGP port.
    Set {
        /// The cluster's AS number (nodes without their own).
        #[arg(long = "as")]
        as_number: Option<u32>,
        /// The full node-to-node BGP mesh: on or off.
        #[arg(long)]
        mesh: Option<OnOff>,
        /// TCP port the agents listen on for BGP.
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
        /// Node the addresses are allocated for.
        #[arg(long)]
        node: String,
        /// Concurrent workers.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Allocations per worker.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Handles are named PREFIX-WORKER-N.
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
        /// Concurrent workers.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Transactions per worker.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Every worker increments this one counter key (checks that no update is lost).
        #[arg(long)]
        shared_key: Option<String>,
    },
    /// The agent's datastore follower at scale: seed NODES synthetic nodes with BLOCKS
    /// affinities each, join as node-00000, count its reads and CPU for CHANGES changes elsewhere.
    /// The cluster peers through two reflectors (mesh off), as large Calico clusters do.
    Follower {
        /// Synthetic Node records to seed.
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// Block affinities per node.
        #[arg(long, default_value_t = 4)]
        blocks: usize,
        /// Changes made elsewhere in the cluster while the follower runs.
        #[arg(long, default_value_t = 100)]
        changes: usize,
        /// Do not seed: the datastore already holds the synthetic cluster.
        #[arg(long)]
        no_seed: bool,
        /// Seed the default full mesh instead of the reflectors (every node change then
        /// matters to every node).
        #[arg(long)]
        mesh: bool,
    },
    /// BGP peer simulator: CLIENTS iBGP reflector clients from consecutive addresses, each
    /// advertising BLOCKS /26s; times Established, convergence, a withdraw wave and a flap.
    BgpPeers {
        /// The reflector's address.
        #[arg(long)]
        reflector: std::net::IpAddr,
        /// The reflector's BGP port.
        #[arg(long, default_value_t = 179)]
        port: u16,
        /// The AS of the reflector and its clients.
        #[arg(long = "as", default_value_t = 64512)]
        asn: u32,
        /// The first client's address (client i uses it + i; they must be configured).
        #[arg(long)]
        first_client: std::net::Ipv4Addr,
        /// Number of clients.
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// /26 blocks per client.
        #[arg(long, default_value_t = 4)]
        blocks: usize,
        /// Where the simulated blocks start.
        #[arg(long, default_value = "10.200.0.0")]
        block_base: std::net::Ipv4Addr,
        /// Hold time offered (s).
        #[arg(long, default_value_t = 240)]
        hold_time: u16,
        /// Seconds each phase may take.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Clients connecting at once.
        #[arg(long, default_value_t = 256)]
        connect_parallel: usize,
        /// The reflector's pid: its peak RSS and CPU are reported.
        #[arg(long)]
        reflector_pid: Option<u32>,
        /// Once all are Established, hold the sessions idle SECONDS and end (no convergence
        /// phases, no reflection needed; BLOCKS may be 0).
        #[arg(long, value_name = "SECONDS")]
        idle: Option<u64>,
        /// Clients announce their blocks only once all are Established, all at once: the
        /// convergence figure then times the reflection alone.
        #[arg(long)]
        announce_together: bool,
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
