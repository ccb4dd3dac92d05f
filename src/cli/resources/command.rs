//! `routectl apply|create|replace -f`, `get KIND [NAME]`, `delete KIND NAME | -f`: reading
//! the input, printing outcomes and documents, and mapping failures to [`CliError`].

use super::store::{self, Outcome, Verb, WriteError};
use super::{prepare_all, Document, DocumentError, Kind, ALL_KINDS};
use crate::cli::commands::{ok, Result};
use crate::cli::error::CliError;
use crate::cli::{table, Output};
use crate::datastore::Datastore;
use serde_json::Value;
use std::io::Read;
use std::process::ExitCode;
use std::sync::Arc;

/// Reads FILE, or standard input for `-`; returns the name errors use and the text.
fn read_input(file: &str) -> Result<(String, String)> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::invalid("-f -", format!("cannot read standard input: {e}")))?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::invalid("-f", format!("cannot read {file}: {e}")))?;
    Ok((file.to_string(), text))
}

fn invalid_documents(errors: &[DocumentError]) -> CliError {
    let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    CliError::InvalidDocument {
        message: format!(
            "{}\nnothing was written; fix the document(s) and run it again",
            lines.join("\n")
        ),
    }
}

fn print_outcomes(out: Output, outcomes: &[Outcome]) -> Result<()> {
    crate::cli::commands::print(out, &outcomes, || {
        outcomes
            .iter()
            .map(|o| {
                let dry = if o.dry_run { " (dry run)" } else { "" };
                format!(
                    "{} {} {}{dry}\n",
                    o.kind.to_ascii_lowercase(),
                    o.name,
                    o.action
                )
            })
            .collect()
    })
}

/// `apply`, `create`, `replace`: every document is checked first; then each is written in
/// its own transaction, in file order, stopping at the first that fails.
pub async fn write(
    store: Arc<dyn Datastore>,
    verb: Verb,
    file: &str,
    dry_run: bool,
    out: Output,
) -> Result<ExitCode> {
    let (source, text) = read_input(file)?;
    let prepared = prepare_all(&source, &text).map_err(|e| invalid_documents(&e))?;
    let mut outcomes = Vec::new();
    for doc in &prepared {
        match store::write(store.as_ref(), doc, verb, dry_run).await {
            Ok(outcome) => outcomes.push(outcome),
            Err(e) => {
                print_outcomes(out, &outcomes)?;
                return Err(write_error(e, outcomes.len()));
            }
        }
    }
    print_outcomes(out, &outcomes)?;
    ok()
}

fn write_error(e: WriteError, written: usize) -> CliError {
    let tail = if written > 0 {
        format!(" (the {written} document(s) before it were written)")
    } else {
        String::new()
    };
    match e {
        WriteError::Invalid(d) => CliError::InvalidDocument {
            message: format!("{d}{tail}"),
        },
        WriteError::NotFound(d) => CliError::not_found(d.source.clone(), format!("{d}{tail}")),
        WriteError::Conflict(d) => CliError::conflict(d.source.clone(), format!("{d}{tail}")),
        WriteError::Datastore(d) => d.into(),
    }
}

/// A kind named on the command line.
pub fn parse_kind(text: &str) -> Result<Kind> {
    Kind::parse(text).ok_or_else(|| {
        CliError::invalid(
            "KIND",
            format!(
                "unknown kind {text:?}; use one of {}",
                ALL_KINDS.map(|k| k.name().to_ascii_lowercase()).join(", ")
            ),
        )
    })
}

/// `get KIND [NAME]`: YAML prints a stream `apply -f` takes back; JSON one document or a list.
pub async fn get(
    store: Arc<dyn Datastore>,
    kind: &str,
    name: Option<&str>,
    out: Output,
) -> Result<ExitCode> {
    let kind = parse_kind(kind)?;
    let docs = store::read(store.as_ref(), kind, name).await?;
    if let (Some(name), true) = (name, docs.is_empty()) {
        let what = format!("{} {name}", kind.name());
        return Err(CliError::not_found(&what, format!("{what} not found")));
    }
    match out {
        Output::Yaml => {
            for doc in &docs {
                print!("---\n{}", serde_yaml::to_string(doc)?);
            }
        }
        Output::Json if name.is_some() && docs.len() == 1 => {
            println!("{}", serde_json::to_string_pretty(&docs[0])?);
        }
        Output::Json => {
            let list = serde_json::json!({"apiVersion": super::API_VERSION, "kind": "List", "items": docs});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table => print!("{}", render(kind, &docs, false)),
        Output::Wide => print!("{}", render(kind, &docs, true)),
    }
    ok()
}

/// The table of `get`: NAME and the kind's columns, or every field with `wide`.
fn render(kind: Kind, docs: &[Document], wide: bool) -> String {
    let mut columns: Vec<String> = kind.columns().iter().map(|c| c.to_string()).collect();
    if wide {
        for doc in docs {
            for key in doc.spec.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    let show = |v: Option<&Value>| match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let rows: Vec<Vec<String>> = docs
        .iter()
        .map(|d| {
            let mut row = vec![d.metadata.name.clone()];
            row.extend(columns.iter().map(|c| show(d.spec.get(c))));
            if wide {
                let labels: Vec<String> = d
                    .metadata
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={}", show(Some(v))))
                    .collect();
                row.push(if labels.is_empty() {
                    "-".into()
                } else {
                    labels.join(",")
                });
            }
            row
        })
        .collect();
    let mut headers: Vec<String> = vec!["NAME".into()];
    headers.extend(columns.iter().map(|c| header(c)));
    if wide {
        headers.push("LABELS".into());
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    table::render(&headers, &rows)
}

/// `peerIP` → `PEER IP`, `asNumber` → `AS NUMBER`.
fn header(field: &str) -> String {
    super::fields::to_snake(field)
        .replace('_', " ")
        .to_ascii_uppercase()
}

/// `delete KIND NAME` or `delete -f FILE` (each document's kind and name, and its
/// resourceVersion if it carries one).
pub async fn delete(
    store: Arc<dyn Datastore>,
    kind: Option<&str>,
    name: Option<&str>,
    file: Option<&str>,
    dry_run: bool,
    out: Output,
) -> Result<ExitCode> {
    let targets = match (kind, name, file) {
        (Some(kind), Some(name), None) => vec![(parse_kind(kind)?, name.to_string(), None)],
        (None, None, Some(file)) => {
            let (source, text) = read_input(file)?;
            let docs = super::parse_stream(&source, &text).map_err(|e| invalid_documents(&[e]))?;
            let mut targets = Vec::new();
            let mut errors = Vec::new();
            for (origin, doc) in &docs {
                match super::identify(origin, doc) {
                    Ok(t) => targets.push(t),
                    Err(e) => errors.push(e),
                }
            }
            if !errors.is_empty() {
                return Err(invalid_documents(&errors));
            }
            targets
        }
        _ => {
            return Err(CliError::Usage(
                "give KIND NAME or -f FILE (e.g. `routectl delete bgppeer rack1`)".into(),
            ))
        }
    };
    let mut outcomes = Vec::new();
    for (kind, name, resource_version) in targets {
        if kind == Kind::Node && !dry_run {
            node_delete(store.clone(), &name, false, out).await?;
            continue;
        }
        match store::delete(store.clone(), kind, &name, resource_version, dry_run).await {
            Ok(o) => outcomes.push(o),
            Err(e) => {
                print_outcomes(out, &outcomes)?;
                return Err(e);
            }
        }
    }
    print_outcomes(out, &outcomes)?;
    ok()
}

/// `routectl node delete NAME [--force]` (and `routectl delete node NAME`): decommission.
pub async fn node_delete(
    store: Arc<dyn Datastore>,
    name: &str,
    force: bool,
    out: Output,
) -> Result<ExitCode> {
    use crate::ipam::decommission::DecommissionError;
    let ipam = crate::ipam::Ipam::new(store);
    let done = match ipam.decommission_node(name, force, None).await {
        Ok(done) => done,
        Err(e @ DecommissionError::Alive { .. }) => {
            return Err(CliError::conflict(format!("node {name}"), e))
        }
        Err(e @ DecommissionError::NotFound { .. }) => {
            return Err(CliError::not_found(format!("node {name}"), e))
        }
        Err(DecommissionError::Ipam(e)) => return Err(e.into()),
    };
    crate::cli::commands::print(out, &done, || {
        format!(
            "node {} deleted{}: {} address(es) of {} handle(s) released, {} block(s) released, \
             {} block(s) left without affinity, peers removed: {}\n",
            done.node,
            if done.resumed {
                " (finished an interrupted run)"
            } else {
                ""
            },
            done.addresses_released,
            done.handles_released.len(),
            done.blocks_released.len(),
            done.blocks_unaffined.len(),
            if done.peers_removed.is_empty() {
                "none".to_string()
            } else {
                done.peers_removed.join(", ")
            },
        )
    })?;
    ok()
}
