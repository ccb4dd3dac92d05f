//! `routectl bfd status` and the `--bfd*` flags of `routectl config set` / `peer create`.
//!
//! Data flow: the flags (`BfdArgs`) change a resource's `BfdConfig` (model) before it is
//! validated and written; `bfd status` reads `GET /v1/bfd` from the local agent into
//! [`v1::BfdStatus`] and renders it (`-o json` prints it unchanged).

use super::commands::{print, Result};
use super::{table, OnOff, Output};
use crate::api::client::Client;
use crate::api::v1;
use crate::model::BfdConfig;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

/// BFD settings on the command line.
#[derive(Debug, Clone, Default, Args)]
pub struct BfdArgs {
    /// Run BFD (RFC 5880) on the session(s): a lost path ends BGP within the detection time.
    #[arg(long)]
    pub bfd: Option<OnOff>,
    /// BFD transmit and receive interval, ms (10-60000; default 300).
    #[arg(long, value_parser = clap::value_parser!(u32).range(10..=60_000))]
    pub bfd_interval_ms: Option<u32>,
    /// BFD detect multiplier: packets missed before the path is down (2-255; default 3).
    #[arg(long, value_parser = clap::value_parser!(u8).range(2..=255))]
    pub bfd_multiplier: Option<u8>,
    /// on: a BFD failure keeps the peer's routes as stale when graceful restart was
    /// negotiated, instead of withdrawing them.
    #[arg(long)]
    pub bfd_graceful: Option<OnOff>,
}

impl BfdArgs {
    /// `current` with the flags applied; unchanged when no flag was given.
    pub fn apply(&self, current: Option<BfdConfig>) -> Option<BfdConfig> {
        if self.bfd.is_none()
            && self.bfd_interval_ms.is_none()
            && self.bfd_multiplier.is_none()
            && self.bfd_graceful.is_none()
        {
            return current;
        }
        let mut config = current.unwrap_or_default();
        if let Some(on) = self.bfd {
            config.enabled = on == OnOff::On;
        } else if current.is_none() {
            // Giving intervals turns BFD on unless --bfd off says otherwise.
            config.enabled = true;
        }
        if let Some(ms) = self.bfd_interval_ms {
            config.min_rx_ms = ms;
            config.min_tx_ms = ms;
        }
        if let Some(multiplier) = self.bfd_multiplier {
            config.multiplier = multiplier;
        }
        if let Some(graceful) = self.bfd_graceful {
            config.graceful = graceful == OnOff::On;
        }
        Some(config)
    }
}

pub fn status(socket: &Path, out: Output) -> Result<ExitCode> {
    let client = Client::new(socket).with_timeout(std::time::Duration::from_secs(5));
    let status: v1::BfdStatus = client.get("/v1/bfd")?;
    print(out, &status, || render(&status))?;
    Ok(ExitCode::SUCCESS)
}

fn render(status: &v1::BfdStatus) -> String {
    let rows: Vec<Vec<String>> = status
        .sessions
        .iter()
        .map(|s| {
            vec![
                s.peer.to_string(),
                s.state.clone(),
                s.remote_state.clone(),
                format!("{}/{} ms x{}", s.min_tx_ms, s.min_rx_ms, s.multiplier),
                format!("{} ms", s.tx_interval_us / 1000),
                format!("{} ms", s.detection_time_us / 1000),
                s.diagnostic.clone(),
                s.source_port.to_string(),
            ]
        })
        .collect();
    let mut text = if rows.is_empty() {
        "No BFD sessions.\n".to_owned()
    } else {
        table::render(
            &[
                "PEER",
                "STATE",
                "REMOTE",
                "CONFIGURED (TX/RX)",
                "TX",
                "DETECT",
                "DIAGNOSTIC",
                "SOURCE PORT",
            ],
            &rows,
        )
    };
    let c = &status.counters;
    let malformed: u64 = c.malformed.values().sum();
    text.push_str(&format!(
        "received {} sent {} dropped: ttl {} no-session {} malformed {} send-errors {}\n",
        c.received, c.sent, c.bad_ttl, c.no_session, malformed, c.send_errors
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1::golden;

    #[test]
    fn bfd_status_reads_the_golden_file_and_renders_the_session() {
        let status: v1::BfdStatus = golden::read("bfd-status");
        let text = render(&status);
        assert!(
            text.contains("| 10.0.0.254 | Up    | Up     | 300/300 ms x3      | 300 ms | 900 ms ")
                && text.contains("malformed 3"),
            "{text}"
        );
    }

    #[test]
    fn flags_turn_bfd_on_change_intervals_and_keep_untouched_settings() {
        let none = BfdArgs::default();
        assert_eq!(none.apply(None), None);
        let interval = BfdArgs {
            bfd_interval_ms: Some(100),
            ..BfdArgs::default()
        };
        let on = interval.apply(None).unwrap();
        assert!(on.enabled);
        assert_eq!((on.min_rx_ms, on.min_tx_ms, on.multiplier), (100, 100, 3));
        let off = BfdArgs {
            bfd: Some(OnOff::Off),
            ..BfdArgs::default()
        };
        let turned_off = off.apply(Some(on)).unwrap();
        assert!(!turned_off.enabled);
        assert_eq!(turned_off.min_rx_ms, 100);
        let multiplier = BfdArgs {
            bfd_multiplier: Some(5),
            ..BfdArgs::default()
        };
        assert!(!multiplier.apply(Some(turned_off)).unwrap().enabled);
    }
}
