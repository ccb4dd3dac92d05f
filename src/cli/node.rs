//! `routectl node label` and `routectl node set`: change a node record's labels and its
//! route-reflector cluster ID with a compare-and-swap update, keeping every other field (the
//! agent re-registers the node without touching them).
//!
//! ```text
//!  args ─> parse_label_args (k=v | k-) ─> update_json(nodes/<name>): apply, validate ─> print
//! ```

use super::commands::{ok, print, Result};
use super::error::CliError;
use super::{NodeCommand, Output};
use crate::datastore::{update_json, Datastore, UpdateError};
use crate::model::node::validate_label;
use crate::model::{keys, Node};
use std::process::ExitCode;
use std::sync::Arc;

/// One label argument: set `key` to a value, or remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LabelChange {
    Set(String, String),
    Remove(String),
}

/// `key=value` or `key-`, as kubectl takes them.
fn parse_label_arg(arg: &str) -> Result<LabelChange> {
    let bad = |reason: String| CliError::invalid("labels", format!("{arg:?}: {reason}"));
    if let Some((key, value)) = arg.split_once('=') {
        validate_label(key, value).map_err(|e| bad(e.to_string()))?;
        return Ok(LabelChange::Set(key.into(), value.into()));
    }
    if let Some(key) = arg.strip_suffix('-') {
        validate_label(key, "").map_err(|e| bad(e.to_string()))?;
        return Ok(LabelChange::Remove(key.into()));
    }
    Err(bad(
        "write key=value to set a label or key- to remove it".into()
    ))
}

/// What a command does to the node record.
type NodeChange = Box<dyn Fn(&mut Node) + Send + Sync>;

pub async fn node(store: Arc<dyn Datastore>, cmd: &NodeCommand, out: Output) -> Result<ExitCode> {
    let (name, change): (&str, NodeChange) = match cmd {
        NodeCommand::Label { name, labels } => {
            let changes = labels
                .iter()
                .map(|a| parse_label_arg(a))
                .collect::<Result<Vec<_>>>()?;
            (
                name,
                Box::new(move |node: &mut Node| {
                    for change in &changes {
                        match change {
                            LabelChange::Set(k, v) => {
                                node.labels.insert(k.clone(), v.clone());
                            }
                            LabelChange::Remove(k) => {
                                node.labels.remove(k);
                            }
                        }
                    }
                }),
            )
        }
        NodeCommand::Set {
            name,
            rr_cluster_id,
            no_rr_cluster_id: _,
        } => {
            let id = *rr_cluster_id;
            (
                name,
                Box::new(move |node: &mut Node| node.rr_cluster_id = id),
            )
        }
        NodeCommand::List | NodeCommand::Delete { .. } => return ok(),
    };
    let key = keys::node(name);
    let written = update_json(store.as_ref(), &key, |current: Option<Node>| {
        let Some(mut node) = current else {
            return Err(CliError::not_found(
                format!("node {name}"),
                format!("node {name} not found (nodes register when their agent starts)"),
            ));
        };
        change(&mut node);
        node.validate()?;
        Ok(Some(node))
    })
    .await;
    let node = match written {
        Ok(Some(node)) => node,
        Ok(None) => return ok(),
        Err(UpdateError::Rejected { reason, .. }) => return Err(reason),
        Err(UpdateError::TooManyConflicts { .. }) => {
            return Err(CliError::conflict(
                key,
                "the node record kept changing; run the command again",
            ))
        }
        Err(UpdateError::Datastore(e)) => return Err(e.into()),
    };
    print(out, &node, || {
        let labels: Vec<String> = node
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "node {} updated: labels {}, rr_cluster_id {}\n",
            node.name,
            if labels.is_empty() {
                "(none)".into()
            } else {
                labels.join(",")
            },
            node.rr_cluster_id
                .map_or_else(|| "(none)".into(), |id| id.to_string())
        )
    })?;
    ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments_parse_like_kubectl() {
        assert_eq!(
            parse_label_arg("route-reflector=true").unwrap(),
            LabelChange::Set("route-reflector".into(), "true".into())
        );
        assert_eq!(
            parse_label_arg("zone=").unwrap(),
            LabelChange::Set("zone".into(), String::new())
        );
        assert_eq!(
            parse_label_arg("route-reflector-").unwrap(),
            LabelChange::Remove("route-reflector".into())
        );
        assert!(parse_label_arg("zone").is_err());
        assert!(parse_label_arg("=v").is_err());
        assert!(parse_label_arg("-").is_err());
        assert!(parse_label_arg("a b=c").is_err());
    }
}
