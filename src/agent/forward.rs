//! FORWARD acceptance for pod traffic.
//!
//! Docker (seeds/) and some distributions set the filter FORWARD policy to DROP. In nftables an
//! `accept` ends only the chain it is in: every base chain on the forward hook must accept, so a
//! table of our own cannot override a DROP policy elsewhere. The agent therefore
//! 1. owns `table inet routed` (rebuilt atomically by [`render_ruleset`] + [`apply_ruleset`]
//!    whenever the pools change) with a forward chain accepting traffic from and to pod
//!    interfaces (`rd*`) and from and to pool addresses (sets `pools_v4`/`pools_v6`), and the
//!    natOutgoing postrouting chain (see [`super::nat`]); and
//! 2. inserts two rules, tagged with the comment `routed-pod-forward`, at the top of every other
//!    base chain on the forward hook whose policy is drop (e.g. iptables-nft's `ip filter FORWARD`),
//!    once (it looks for its comment first).
//!
//! Nothing else in other tables is touched. (The rules inserted in other tables match the `rd*`
//! interfaces only: sets cannot be shared across tables, and traffic that only transits a node
//! with pod addresses on both sides meets no pod interface there. Keep such hosts' FORWARD
//! policy at accept, or accept the pool CIDRs there yourself.)

use super::nat::{self, PoolSets};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;

pub const TABLE: &str = "routed";
pub const COMMENT: &str = "routed-pod-forward";
pub const POD_IFACES: &str = "rd*";

/// Start-up, before the datastore answered: programs both parts with no pools known yet, unless
/// the table is already there (an agent restart: the previous ruleset, with the pools and NAT,
/// stays until the pool follower rebuilds it, so new NAT flows see no gap).
pub async fn ensure_forward_accept() -> Result<()> {
    if table_exists().await {
        info!("table inet routed found; kept until the pools are known");
        return accept_in_foreign_chains().await;
    }
    apply_ruleset(&PoolSets::default()).await
}

/// The whole of `table inet routed`, rebuilt in one transaction: creating the table first makes
/// the `delete` valid when it does not exist yet, and nft applies the file atomically, so
/// packets never see a half-built table.
pub fn render_ruleset(sets: &PoolSets) -> String {
    format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
         {sets}\
           chain forward {{\n\
             type filter hook forward priority filter - 10; policy accept;\n\
             iifname \"{POD_IFACES}\" counter accept\n\
             oifname \"{POD_IFACES}\" counter accept\n\
             ip saddr @pools_v4 counter accept\n\
             ip daddr @pools_v4 counter accept\n\
             ip6 saddr @pools_v6 counter accept\n\
             ip6 daddr @pools_v6 counter accept\n\
           }}\n\
         {postrouting}\
         }}\n",
        sets = nat::render_sets(sets),
        postrouting = nat::render_postrouting(),
    )
}

/// Installs [`render_ruleset`] and the acceptance rules in other drop-policy forward chains;
/// idempotent.
pub async fn apply_ruleset(sets: &PoolSets) -> Result<()> {
    nft_apply(&render_ruleset(sets))
        .await
        .context("installing table inet routed")?;
    accept_in_foreign_chains().await
}

/// True when `table inet routed` is in the kernel.
pub async fn table_exists() -> bool {
    nft_json(&["list", "table", "inet", TABLE]).await.is_ok()
}

/// Part 2: accept pod traffic ahead of every other drop-policy forward chain, once per chain
/// (a chain created later, e.g. by Docker, is caught on the next periodic check).
pub async fn accept_in_foreign_chains() -> Result<()> {
    for (family, table, chain) in drop_policy_forward_chains().await? {
        if family == "inet" && table == TABLE {
            continue;
        }
        if chain_has_comment(&family, &table, &chain).await? {
            continue;
        }
        for dir in ["oifname", "iifname"] {
            let rule = format!(
                "insert rule {family} {table} {chain} {dir} \"{POD_IFACES}\" counter accept comment \"{COMMENT}\"\n"
            );
            nft_apply(&rule)
                .await
                .with_context(|| format!("inserting into {family} {table} {chain}"))?;
        }
        info!(%family, %table, %chain, "pod traffic accepted ahead of a drop-policy FORWARD chain");
    }
    Ok(())
}

async fn nft_apply(ruleset: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (install the nftables package)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!("nft: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

async fn nft_json(args: &[&str]) -> Result<Value> {
    let out = Command::new("nft")
        .arg("-j")
        .args(args)
        .output()
        .await
        .context("running nft")?;
    if !out.status.success() {
        bail!(
            "nft -j {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing nft -j output")
}

/// (family, table, chain) of every base chain on the forward hook with policy drop.
async fn drop_policy_forward_chains() -> Result<Vec<(String, String, String)>> {
    let listing = nft_json(&["list", "chains"]).await?;
    let mut out = Vec::new();
    for item in listing["nftables"].as_array().into_iter().flatten() {
        let chain = &item["chain"];
        if chain["hook"] == "forward" && chain["policy"] == "drop" {
            if let (Some(f), Some(t), Some(n)) = (
                chain["family"].as_str(),
                chain["table"].as_str(),
                chain["name"].as_str(),
            ) {
                out.push((f.to_string(), t.to_string(), n.to_string()));
            }
        }
    }
    Ok(out)
}

async fn chain_has_comment(family: &str, table: &str, chain: &str) -> Result<bool> {
    let listing = nft_json(&["list", "chain", family, table, chain]).await?;
    Ok(listing["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|item| item["rule"]["comment"] == COMMENT))
}
