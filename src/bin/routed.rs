//! routed: the node agent (see `routed::agent`).

use clap::Parser;
use routed::datastore::{DatastoreConfig, TlsFiles, DEFAULT_PREFIX, DEFAULT_URL};
use routed::logging::LogFormat;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "routed",
    version,
    about = "routed node agent: IPAM, BGP and routes for pods"
)]
struct Args {
    /// This node's name (default: the hostname).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Datastore URL: etcd://HOST:PORT[,HOST:PORT], etcds://... (TLS) or sqlite:///PATH.
    #[arg(long, env = "ROUTED_DATASTORE", default_value = DEFAULT_URL)]
    datastore: String,
    /// Key prefix inside the datastore.
    #[arg(long, env = "ROUTED_DATASTORE_PREFIX", default_value = DEFAULT_PREFIX)]
    datastore_prefix: String,
    /// CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, env = "ROUTED_ETCD_CA_FILE")]
    etcd_ca_file: Option<String>,
    /// Client certificate (PEM) presented to etcd.
    #[arg(long, env = "ROUTED_ETCD_CERT_FILE")]
    etcd_cert_file: Option<String>,
    /// Private key (PEM) of the client certificate.
    #[arg(long, env = "ROUTED_ETCD_KEY_FILE")]
    etcd_key_file: Option<String>,
    /// The node address with its prefix length (default: detect with --ip-autodetection).
    #[arg(long, env = "ROUTED_IP")]
    ip: Option<ipnetwork::IpNetwork>,
    /// first-found | interface=REGEX | cidr=CIDR | can-reach=IP
    #[arg(long, env = "ROUTED_IP_AUTODETECTION", default_value = "first-found")]
    ip_autodetection: String,
    /// The local API socket.
    #[arg(long, global = true, env = "ROUTED_SOCKET", default_value = routed::api::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Pod MTU (default: the node interface's MTU minus encapsulation).
    #[arg(long, env = "ROUTED_MTU")]
    mtu: Option<u32>,
    /// Do not touch nftables (FORWARD acceptance for pod traffic).
    #[arg(long)]
    no_forward_rules: bool,
    /// Do not run BGP (IPAM and the CNI API only).
    #[arg(long)]
    no_bgp: bool,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve a BIRD 2.0-compatible control socket here (birdc, bird_exporter -bird.v2).
    #[arg(long, env = "ROUTED_BIRD_SOCKET")]
    bird_socket: Option<PathBuf>,
    /// Serve a BIRD 1.6-compatible control socket here (calicoctl node status, calico-node
    /// -bird-ready, birdcl of BIRD 1.6).
    #[arg(long, env = "ROUTED_BIRD1_SOCKET")]
    bird1_socket: Option<PathBuf>,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (e.g. 0.0.0.0:9099).
    #[arg(long, env = "ROUTED_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Fault injection (tests, drills): while this file exists, routes of ours deleted from the
    /// kernel are not put back; they are at once when it is removed.
    #[arg(long, env = "ROUTED_ROUTE_REPAIR_HOLD")]
    route_repair_hold: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Ask the running agent whether it is alive (or, with --ready, ready); exit status 0 or 1.
    /// Made for Kubernetes exec probes.
    Health {
        /// Check readiness (/readyz) instead of liveness (/healthz).
        #[arg(long)]
        ready: bool,
    },
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Health { ready }) = args.command {
        return match routed::agent::health::probe(&args.socket, ready) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                println!("{e}");
                ExitCode::from(1)
            }
        };
    }
    routed::logging::init(args.log_format);
    let config = routed::agent::AgentConfig {
        node_name: args.node_name.unwrap_or_else(hostname),
        datastore: DatastoreConfig {
            url: args.datastore,
            prefix: args.datastore_prefix,
            tls: TlsFiles {
                ca_file: args.etcd_ca_file,
                cert_file: args.etcd_cert_file,
                key_file: args.etcd_key_file,
            },
        },
        ip: args.ip,
        autodetect: args.ip_autodetection,
        socket: args.socket,
        mtu: args.mtu,
        manage_forward: !args.no_forward_rules,
        bgp: !args.no_bgp,
        bird_socket: args.bird_socket,
        bird1_socket: args.bird1_socket,
        metrics_listen: args.metrics_listen,
        route_repair_hold: args.route_repair_hold,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("routed: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(routed::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "routed stopped");
            ExitCode::from(1)
        }
    }
}
