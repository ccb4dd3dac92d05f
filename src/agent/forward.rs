//! FORWARD acceptance for pod traffic.
//!
//! Docker (seeds/) and some distributions set the filter FORWARD policy to DROP. In nftables an
//! `accept` ends only the chain it is in: every base chain on the forward hook must accept, so a
//! table of our own cannot override a DROP policy elsewhere. The agent therefore
//! 1. owns `table inet routed` (rebuilt atomically) with a forward chain accepting traffic from
//!    and to pod interfaces (`rd*`), which is where later rules (NAT, policy) go; and
//! 2. inserts two rules, tagged with the comment `routed-pod-forward`, at the top of every other
//!    base chain on the forward hook whose policy is drop (e.g. iptables-nft's `ip filter FORWARD`),
//!    once (it looks for its comment first).
//!
//! Nothing else in other tables is touched.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tracing::info;

pub const TABLE: &str = "routed";
pub const COMMENT: &str = "routed-pod-forward";
pub const POD_IFACES: &str = "rd*";

/// Programs both parts; idempotent.
pub async fn ensure_forward_accept() -> Result<()> {
    let ruleset = format!(
        "table inet {TABLE} {{}}\n\
         delete table inet {TABLE}\n\
         table inet {TABLE} {{\n\
           chain forward {{\n\
             type filter hook forward priority filter - 10; policy accept;\n\
             iifname \"{POD_IFACES}\" counter accept\n\
             oifname \"{POD_IFACES}\" counter accept\n\
           }}\n\
         }}\n"
    );
    nft_apply(&ruleset)
        .await
        .context("installing table inet routed")?;
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
