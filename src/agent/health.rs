//! Liveness and readiness, as the local API reports them and `routed health` checks them.
//!
//! - Liveness (`/healthz`): the process and its runtime answer a request. Nothing else: a
//!   liveness failure restarts the agent, which must not happen because the datastore or a peer
//!   is away (the data plane keeps working without the agent).
//! - Readiness (`/readyz`): every required check passed once since start:
//!   `datastore` (the node is registered), `routes` (with BGP: the route reconciler programmed
//!   the kernel; an external peer being down does not count), `workload_routes` (the workload
//!   reconciler did its first pass after a full datastore snapshot). `nftables` (forward
//!   acceptance and NAT programmed) is reported but not required: pod-to-pod traffic does not
//!   depend on it when the FORWARD policy is accept, and a node without nftables still serves
//!   pods; its absence is listed in `reasons`.
//!
//! The checks combine into a [`Readiness`]; the local API server maps it to the wire type
//! [`crate::api::v1::Readiness`]: JSON either way, 200 when ready, 503 (with `error` and `kind`,
//! like every other non-2xx answer of the API) when not.

use std::collections::BTreeMap;
use std::path::Path;

/// The outcome of the readiness checks (internal; `/readyz` serves its v1 mapping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// Check name → passed.
    pub checks: BTreeMap<String, bool>,
    /// One sentence per failed check (required or not).
    pub reasons: Vec<String>,
}

/// One check: name, passed, required for readiness, what to say when it failed.
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub required: bool,
    pub failure: &'static str,
}

impl Readiness {
    /// Combines the checks (pure).
    pub fn from_checks(checks: &[Check]) -> Readiness {
        let ready = checks.iter().all(|c| c.passed || !c.required);
        let reasons: Vec<String> = checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.failure))
            .collect();
        Readiness {
            ready,
            checks: checks
                .iter()
                .map(|c| (c.name.to_string(), c.passed))
                .collect(),
            reasons,
        }
    }
}

/// `routed health [--ready]`: asks the agent at `socket`; Ok(body) when healthy (or ready),
/// the client's error otherwise (unreachable, or the agent's 503 body). For Kubernetes exec
/// probes (exit status 0/1).
pub fn probe(socket: &Path, ready: bool) -> Result<String, crate::api::client::ClientError> {
    let client = crate::api::client::Client::new(socket);
    let path = if ready { "/readyz" } else { "/healthz" };
    client
        .get::<serde_json::Value>(path)
        .map(|body| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, passed: bool, required: bool) -> Check {
        Check {
            name,
            passed,
            required,
            failure: "not yet",
        }
    }

    #[test]
    fn ready_when_every_required_check_passed() {
        let r = Readiness::from_checks(&[
            check("datastore", true, true),
            check("nftables", false, false),
        ]);
        assert!(r.ready);
        assert_eq!(r.reasons, vec!["nftables: not yet".to_string()]);
        let r =
            Readiness::from_checks(&[check("datastore", false, true), check("routes", true, true)]);
        assert!(!r.ready);
        assert_eq!(r.checks.get("routes"), Some(&true));
        assert_eq!(r.reasons, vec!["datastore: not yet".to_string()]);
    }
}
