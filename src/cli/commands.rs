//! The routectl commands: each reads or writes the datastore through the library and prints
//! in the chosen output format. Errors come back as [`CliError`] (their exit code), printed once
//! by `cli::run`.

use super::error::CliError;
use super::resources::{self, store::Verb};
use super::{
    table, BenchCommand, Cli, Command, IpamCommand, NodeCommand, OnOff, Output, PoolCommand,
};
use crate::datastore::{self, decode_json, Datastore};
use crate::ipam::{bench, AllocateRequest, BlockSummary, CheckReport, Family, Ipam};
use crate::model::{keys, parse_cidr, EncapMode, IpPool, Node};
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Arc;

pub(super) type Result<T, E = CliError> = std::result::Result<T, E>;

pub async fn dispatch(cli: &Cli) -> Result<ExitCode> {
    if let Command::Status { socket, node: None } = &cli.command {
        return super::status::status(socket, cli.global.output);
    }
    if let Command::Completion { shell } = &cli.command {
        return completion(*shell);
    }
    if let Command::Bfd(super::BfdCommand::Status { socket }) = &cli.command {
        return super::bfd::status(socket, cli.global.output);
    }
    let config = cli.global.datastore_config();
    let store = datastore::open(&config)
        .await
        .map_err(|e| CliError::datastore_open(&config.url, e))?;
    let out = cli.global.output;
    match &cli.command {
        Command::Pool(cmd) => pool(store, cmd, out).await,
        Command::Ipam(cmd) => ipam(store, cmd, out).await,
        Command::Node(NodeCommand::List) => node_list(store, out).await,
        Command::Node(cmd @ (NodeCommand::Label { .. } | NodeCommand::Set { .. })) => {
            super::node::node(store, cmd, out).await
        }
        Command::Node(NodeCommand::Delete { name, force }) => {
            resources::command::node_delete(store, name, *force, out).await
        }
        Command::Bench(cmd) => bench_cmd(store, cmd, out).await,
        Command::Peer(cmd) => super::bgp::peer(store, cmd, out).await,
        Command::Config(cmd) => super::bgp::config(store, cmd, out).await,
        Command::Status {
            node: Some(node), ..
        } => super::cluster::node_status(store, node, out).await,
        Command::Cluster(super::ClusterCommand::Status) => super::cluster::status(store, out).await,
        Command::Status { .. } | Command::Completion { .. } | Command::Bfd(_) => ok(),
        Command::Apply(a) => {
            resources::command::write(store, Verb::Apply, &a.file, a.dry_run, out).await
        }
        Command::Create(a) => {
            resources::command::write(store, Verb::Create, &a.file, a.dry_run, out).await
        }
        Command::Replace(a) => {
            resources::command::write(store, Verb::Replace, &a.file, a.dry_run, out).await
        }
        Command::Get { kind, name } => {
            resources::command::get(store, kind, name.as_deref(), out).await
        }
        Command::Delete(d) => {
            let (kind, name, file) = (d.kind.as_deref(), d.name.as_deref(), d.file.as_deref());
            resources::command::delete(store, kind, name, file, d.dry_run, out).await
        }
    }
}

/// Prints `value` as JSON or YAML, or `table()` for the table format.
pub(super) fn print<T: Serialize>(
    out: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Output::Table | Output::Wide => print!("{}", table()),
    }
    Ok(())
}

/// `routectl completion SHELL`: the completion script on standard output.
fn completion(shell: super::CompletionShell) -> Result<ExitCode> {
    use clap::CommandFactory;
    let shell = match shell {
        super::CompletionShell::Bash => clap_complete::Shell::Bash,
        super::CompletionShell::Zsh => clap_complete::Shell::Zsh,
        super::CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "routectl", &mut std::io::stdout());
    ok()
}

pub(super) fn ok() -> Result<ExitCode> {
    Ok(ExitCode::SUCCESS)
}

/// An encapsulation mode given to `flag`.
fn parse_mode(flag: &str, mode: &str) -> Result<EncapMode> {
    mode.parse().map_err(|e| CliError::invalid(flag, e))
}

async fn pool(store: Arc<dyn Datastore>, cmd: &PoolCommand, out: Output) -> Result<ExitCode> {
    let ipam = Ipam::new(store);
    match cmd {
        PoolCommand::Create {
            name,
            cidr,
            block_size,
            ipip_mode,
            vxlan_mode,
            nat_outgoing,
            disabled,
            disable_bgp_export,
        } => {
            let cidr = parse_cidr(cidr).map_err(|e| CliError::invalid("--cidr", e))?;
            let mut pool = IpPool::new(name, cidr);
            if let Some(size) = block_size {
                pool.block_size = *size;
            }
            pool.ipip_mode = parse_mode("--ipip-mode", ipip_mode)?;
            pool.vxlan_mode = parse_mode("--vxlan-mode", vxlan_mode)?;
            pool.nat_outgoing = *nat_outgoing;
            pool.disabled = *disabled;
            pool.disable_bgp_export = *disable_bgp_export;
            ipam.create_pool(&pool).await?;
            print(out, &pool, || {
                format!(
                    "pool {} created ({}, blocks of /{})\n",
                    pool.name, pool.cidr, pool.block_size
                )
            })?;
        }
        PoolCommand::List => {
            let pools = ipam.list_pools().await?;
            print(out, &pools, || render_pools(&pools))?;
        }
        PoolCommand::Set {
            name,
            ipip_mode,
            vxlan_mode,
            nat_outgoing,
            disabled,
            disable_bgp_export,
        } => {
            let ipip = ipip_mode
                .as_deref()
                .map(|m| parse_mode("--ipip-mode", m))
                .transpose()?;
            let vxlan = vxlan_mode
                .as_deref()
                .map(|m| parse_mode("--vxlan-mode", m))
                .transpose()?;
            let pool = ipam
                .update_pool(name, |p| {
                    if let Some(m) = ipip {
                        p.ipip_mode = m;
                    }
                    if let Some(m) = vxlan {
                        p.vxlan_mode = m;
                    }
                    if let Some(v) = nat_outgoing {
                        p.nat_outgoing = *v;
                    }
                    if let Some(v) = disabled {
                        p.disabled = *v;
                    }
                    if let Some(v) = disable_bgp_export {
                        p.disable_bgp_export = *v;
                    }
                })
                .await?;
            print(out, &pool, || format!("pool {} updated\n", pool.name))?;
        }
        PoolCommand::Delete { name, force } => {
            let done = ipam.delete_pool(name, *force).await?;
            print(out, &done, || {
                format!(
                    "pool {} deleted ({} block(s) removed, {} address(es) released)\n",
                    done.pool, done.blocks_removed, done.addresses_released
                )
            })?;
        }
    }
    ok()
}

async fn ipam(store: Arc<dyn Datastore>, cmd: &IpamCommand, out: Output) -> Result<ExitCode> {
    let ipam = Ipam::new(store);
    match cmd {
        IpamCommand::Allocate {
            node,
            handle,
            count,
            pools,
            ipv6,
        } => {
            let mut req = AllocateRequest::new(node, handle, *count);
            req.pools = pools.clone();
            req.family = if *ipv6 { Family::V6 } else { Family::V4 };
            req.attributes.insert("node".into(), node.clone());
            let got = ipam.allocate(&req).await?;
            print(out, &got, || {
                got.iter()
                    .map(|a| format!("{}\n", a.ip))
                    .collect::<String>()
            })?;
        }
        IpamCommand::Release {
            handle,
            ip,
            sequence,
            empty_blocks,
            node,
        } => {
            if let Some(handle) = handle {
                let freed = ipam.release_handle(handle).await?;
                print(out, &freed, || {
                    if freed.is_empty() {
                        format!("handle {handle} held no address; nothing released\n")
                    } else {
                        freed.iter().map(|ip| format!("released {ip}\n")).collect()
                    }
                })?;
            } else if let Some(ip) = ip {
                let released = ipam.release_ip(*ip, *sequence).await?;
                print(out, &released, || {
                    format!("released {} (handle {})\n", released.ip, released.handle)
                })?;
            } else if *empty_blocks {
                let blocks = ipam.release_empty_blocks(node.as_deref()).await?;
                print(out, &blocks, || {
                    format!("released {} empty block(s)\n", blocks.len())
                })?;
            }
        }
        IpamCommand::Show { node } => {
            let blocks = ipam.show(node.as_deref()).await?;
            print(out, &blocks, || render_blocks(&blocks))?;
        }
        IpamCommand::Check => {
            let report = ipam.check().await?;
            print(out, &report, || render_check(&report))?;
            if !report.is_clean() {
                return Ok(ExitCode::from(super::error::exit::FAILED));
            }
        }
        IpamCommand::Repair {
            dry_run,
            grace_period,
        } => {
            let grace = std::time::Duration::from_secs(*grace_period);
            let report = ipam.repair(grace, *dry_run).await?;
            print(out, &report, || render_repair(&report))?;
        }
        IpamCommand::Config {
            strict_affinity,
            max_blocks_per_host,
        } => {
            let mut config = ipam.config().await?;
            if strict_affinity.is_some() || max_blocks_per_host.is_some() {
                if let Some(s) = strict_affinity {
                    config.strict_affinity = *s == OnOff::On;
                }
                if let Some(n) = max_blocks_per_host {
                    config.max_blocks_per_host = *n;
                }
                ipam.set_config(&config).await?;
            }
            print(out, &config, || {
                format!(
                    "strict_affinity: {}\nmax_blocks_per_host: {}\n",
                    if config.strict_affinity { "on" } else { "off" },
                    config.max_blocks_per_host
                )
            })?;
        }
    }
    ok()
}

fn render_repair(r: &crate::ipam::repair::RepairReport) -> String {
    let mut text = String::new();
    for h in &r.leaked_handles {
        text.push_str(&format!(
            "leaked: handle {} of node {} ({} address(es))\n",
            h.handle,
            h.node,
            h.addresses.len()
        ));
    }
    for h in &r.handles_without_container {
        text.push_str(&format!(
            "no container holds: handle {} on node {} ({} address(es))\n",
            h.handle,
            h.node,
            h.addresses.len()
        ));
    }
    for s in &r.skipped {
        text.push_str(&format!("skipped: {s}\n"));
    }
    if r.dry_run {
        text.push_str(&format!(
            "dry run: {} leaked handle(s) would be released; nothing changed\n",
            r.leaked_handles.len() + r.handles_without_container.len()
        ));
    } else {
        text.push_str(&format!(
            "released {} address(es) of {} handle(s), the blocks of {} missing node(s), {} empty block(s)\n",
            r.addresses_released,
            r.released_handles.len(),
            r.nodes_cleaned.len(),
            r.empty_blocks_released.len()
        ));
    }
    text
}

fn render_pools(pools: &[IpPool]) -> String {
    let rows = pools
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.cidr.to_string(),
                p.block_size.to_string(),
                p.ipip_mode.to_string(),
                p.vxlan_mode.to_string(),
                p.nat_outgoing.to_string(),
                p.disabled.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    table::render(
        &[
            "NAME",
            "CIDR",
            "BLOCK SIZE",
            "IPIP",
            "VXLAN",
            "NAT OUTGOING",
            "DISABLED",
        ],
        &rows,
    )
}

fn render_blocks(blocks: &[BlockSummary]) -> String {
    let rows = blocks
        .iter()
        .map(|b| {
            vec![
                b.cidr.to_string(),
                b.affinity.clone().unwrap_or_else(|| "-".into()),
                b.pool.clone().unwrap_or_else(|| "(none)".into()),
                b.used.to_string(),
                b.free.to_string(),
            ]
        })
        .collect::<Vec<_>>();
    let used: usize = blocks.iter().map(|b| b.used).sum();
    let free: usize = blocks.iter().map(|b| b.free).sum();
    table::render(&["BLOCK", "NODE", "POOL", "USED", "FREE"], &rows)
        + &format!(
            "{} block(s), {used} address(es) in use, {free} free\n",
            blocks.len()
        )
}

fn render_check(report: &CheckReport) -> String {
    let mut text = format!(
            "checked {} pool(s), {} block(s), {} affinity record(s), {} handle(s), {} allocated address(es)\n",
            report.pools, report.blocks, report.affinities, report.handles, report.allocated
        );
    if !report.reclaimable_blocks.is_empty() {
        text.push_str(&format!(
            "{} empty block(s) still affine, reclaimable by `routectl ipam repair`: {}\n",
            report.reclaimable_blocks.len(),
            report.reclaimable_blocks.join(", ")
        ));
    }
    if report.is_clean() {
        text.push_str("no inconsistency found\n");
    } else {
        for f in &report.findings {
            text.push_str(&format!("- {f}\n"));
        }
        text.push_str(&format!(
            "{} inconsistency(ies) found\n",
            report.findings.len()
        ));
    }
    text
}

async fn node_list(store: Arc<dyn Datastore>, out: Output) -> Result<ExitCode> {
    let listed = store.list(keys::NODES).await?;
    let nodes = listed
        .kvs
        .iter()
        .map(decode_json::<Node>)
        .collect::<Result<Vec<_>, _>>()?;
    print(out, &nodes, || {
        let rows = nodes
            .iter()
            .map(|n| {
                let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
                vec![
                    n.name.clone(),
                    opt(n.ipv4_address.map(|a| a.to_string())),
                    opt(n.ipv6_address.map(|a| a.to_string())),
                    opt(n.address_detection.clone()),
                    opt(n.as_number.map(|a| a.to_string())),
                    opt(n.mtu.map(|m| m.to_string())),
                ]
            })
            .collect::<Vec<_>>();
        table::render(
            &[
                "NAME",
                "IPV4 ADDRESS",
                "IPV6 ADDRESS",
                "DETECTED BY",
                "AS",
                "MTU",
            ],
            &rows,
        )
    })?;
    ok()
}

async fn bench_cmd(store: Arc<dyn Datastore>, cmd: &BenchCommand, out: Output) -> Result<ExitCode> {
    let reports = match cmd {
        BenchCommand::Ipam {
            release_only: true,
            workers,
            count,
            handle_prefix,
            ..
        } => {
            vec![bench::bench_release(store, *workers, *count, handle_prefix).await?]
        }
        BenchCommand::Ipam {
            node,
            workers,
            count,
            handle_prefix,
            keep,
            independent,
            ..
        } => {
            let (reports, kept) = bench::bench_allocate(
                store,
                node,
                *workers,
                *count,
                handle_prefix,
                *keep,
                *independent,
            )
            .await?;
            if *keep && out == Output::Table {
                for a in &kept {
                    println!("{}", a.ip);
                }
                return ok();
            }
            reports
        }
        BenchCommand::Cas {
            workers,
            count,
            shared_key,
        } => {
            vec![
                bench::bench_cas(store, *workers, *count, "bench/cas-", shared_key.as_deref())
                    .await?,
            ]
        }
        BenchCommand::Follower {
            nodes,
            blocks,
            changes,
            no_seed,
            mesh,
        } => {
            let spec = follower_spec(*nodes, *blocks, *changes, !*no_seed, *mesh);
            return bench_follower(store, spec, out).await;
        }
        BenchCommand::BgpPeers { .. } => return bench_bgp_peers(cmd, out).await,
    };
    print(out, &reports, || {
        let rows = reports
            .iter()
            .map(|r| {
                vec![
                    r.operation.clone(),
                    r.workers.to_string(),
                    r.operations.to_string(),
                    format!("{:.0}", r.ops_per_second),
                    format!("{:.2}", r.p50_ms),
                    format!("{:.2}", r.p99_ms),
                    format!("{:.2}", r.round_trips_per_op),
                ]
            })
            .collect::<Vec<_>>();
        table::render(
            &[
                "OPERATION",
                "WORKERS",
                "OPS",
                "OPS/S",
                "P50 MS",
                "P99 MS",
                "ROUND TRIPS/OP",
            ],
            &rows,
        )
    })?;
    ok()
}

/// What `routectl bench follower`'s flags ask for.
fn follower_spec(
    nodes: usize,
    blocks: usize,
    changes: usize,
    seed: bool,
    mesh: bool,
) -> crate::agent::follower_bench::BenchSpec {
    use crate::agent::follower_bench::{BenchSpec, Topology};
    BenchSpec {
        nodes,
        blocks,
        changes,
        topology: if mesh {
            Topology::Mesh
        } else {
            Topology::Reflectors
        },
        seed,
    }
}

/// `routectl bench follower`: one JSON object, or a line of figures.
async fn bench_follower(
    store: Arc<dyn Datastore>,
    spec: crate::agent::follower_bench::BenchSpec,
    out: Output,
) -> Result<ExitCode> {
    let report = crate::agent::follower_bench::run(store, spec)
        .await
        .map_err(|e| CliError::Failed(format!("{e:#}")))?;
    if out == Output::Json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        println!(
            "topology={:?} nodes={} blocks={} changes={} join_ms={:.0} join_calc_ms={:.1} join_reads={} reads={} reads_per_change={:.2} cpu_ms_per_100={:.0} follower_ms_per_100={:.1} relists={} states_built={} records_per_change={:.0}",
            report.topology, report.nodes, report.blocks_per_node, report.changes, report.join_ms,
            report.join_calc_ms, report.join_reads, report.reads, report.reads_per_change,
            report.cpu_ms_per_100, report.follower_ms_per_100, report.relists,
            report.states_built, report.records_per_change
        );
    }
    ok()
}

/// `routectl bench bgp-peers`: one JSON object, or a line of figures.
async fn bench_bgp_peers(cmd: &BenchCommand, out: Output) -> Result<ExitCode> {
    let BenchCommand::BgpPeers {
        reflector,
        port,
        asn,
        first_client,
        clients,
        blocks,
        block_base,
        hold_time,
        timeout,
        connect_parallel,
        reflector_pid,
        idle,
        announce_together,
    } = cmd
    else {
        return ok();
    };
    let config = crate::bench::bgp_sim::SimConfig {
        reflector: std::net::SocketAddr::new(*reflector, *port),
        asn: *asn,
        first_client: *first_client,
        clients: *clients,
        blocks: *blocks,
        block_base: *block_base,
        hold_time: *hold_time,
        timeout: std::time::Duration::from_secs(*timeout),
        connect_parallel: *connect_parallel,
        reflector_pid: *reflector_pid,
        idle: idle.map(std::time::Duration::from_secs),
        announce_together: *announce_together,
    };
    let report = crate::bench::bgp_sim::run(config)
        .await
        .map_err(|e| CliError::Failed(format!("{e:#}")))?;
    if out == Output::Json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        let mb = report
            .reflector_peak_rss_mb
            .map_or("-".into(), |m| format!("{m:.0}"));
        let cpu = report
            .reflector_cpu_s
            .map_or("-".into(), |c| format!("{c:.2}"));
        println!(
            "clients={} blocks={} established_s={:.2} converged_s={:.2} withdraw_s={:.3} flap_s={:.3} reflector_peak_rss_mb={mb} reflector_cpu_s={cpu} updates={} nlri={}",
            report.clients, report.blocks, report.established_s, report.converged_s,
            report.withdraw_s, report.flap_s, report.updates_received, report.nlri_received
        );
    }
    ok()
}
