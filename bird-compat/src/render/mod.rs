//! Pure renderers: (dialect, request line, snapshot) → [`Reply`]. Each command's text follows
//! the captures of the real daemons in `tests/golden/` (BIRD 1.6.8 and 2.0.12): column
//! widths, codes, continuation lines and the terminating line, errors included.

mod protocols;
mod routes;

use crate::command::{self, Command, ParseError};
use crate::model::{ProtoKind, Snapshot};
use crate::reply::Reply;
use crate::time;
use crate::Dialect;

/// Answers one request line from `snapshot`.
pub fn respond(dialect: Dialect, line: &str, snapshot: &Snapshot) -> Reply {
    let result = command::parse(line).and_then(|cmd| render(dialect, &cmd, snapshot));
    match result {
        Ok(reply) => reply,
        Err(e) => error_reply(dialect, &e),
    }
}

/// Renders a parsed command; errors that depend on the snapshot (an unknown protocol name)
/// come back as [`ParseError`].
pub fn render(dialect: Dialect, cmd: &Command, snapshot: &Snapshot) -> Result<Reply, ParseError> {
    if let Some(name) = named_protocol(cmd) {
        if !snapshot.protocols.iter().any(|p| p.name == name) {
            return Err(ParseError::NotAProtocol(name.to_string()));
        }
    }
    Ok(match cmd {
        Command::Status => status(dialect, snapshot),
        Command::Protocols { all, name } => {
            protocols::show(dialect, snapshot, *all, name.as_deref())
        }
        Command::Route(query) => routes::show(dialect, snapshot, query),
        Command::RouteCount => routes::count(dialect, snapshot),
        Command::BfdSessions { name } => routes::bfd_sessions(dialect, snapshot, name.as_deref()),
    })
}

fn named_protocol(cmd: &Command) -> Option<&str> {
    match cmd {
        Command::Protocols { name, .. } | Command::BfdSessions { name } => name.as_deref(),
        Command::Route(query) => query.protocol.as_deref(),
        Command::Status | Command::RouteCount => None,
    }
}

/// BIRD's reply to a request it could not parse or whose protocol does not exist.
pub fn error_reply(dialect: Dialect, error: &ParseError) -> Reply {
    match (dialect, error) {
        (Dialect::Bird1, ParseError::Syntax) => Reply::single(9001, "syntax error"),
        (Dialect::Bird2, ParseError::Syntax) => {
            Reply::single(9001, "syntax error, unexpected CF_SYM_UNDEFINED")
        }
        (Dialect::Bird1, ParseError::NotAProtocol(name)) => {
            Reply::single(9002, format!("{name} is not a protocol"))
        }
        (Dialect::Bird2, ParseError::NotAProtocol(_)) => Reply::single(
            9001,
            "syntax error, unexpected CF_SYM_UNDEFINED, expecting END or CF_SYM_KNOWN or TEXT",
        ),
    }
}

/// The reply to a request line too long to read (BIRD's own limit is 1 KiB... of a line).
pub fn too_long(dialect: Dialect) -> Reply {
    error_reply(dialect, &ParseError::Syntax)
}

fn status(dialect: Dialect, snapshot: &Snapshot) -> Reply {
    let s = &snapshot.status;
    let mut reply = Reply::new();
    reply.push(1000, format!("BIRD {}", dialect.version()));
    let router_id = s.router_id.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
    reply.push(1011, format!("Router ID is {router_id}"));
    if dialect == Dialect::Bird2 {
        reply.push(1011, format!("Hostname is {}", s.hostname));
    }
    reply.push(
        1011,
        format!("Current server time is {}", time::datetime(s.now, dialect)),
    );
    reply.push(
        1011,
        format!("Last reboot on {}", time::datetime(s.started, dialect)),
    );
    reply.push(
        1011,
        format!(
            "Last reconfiguration on {}",
            time::datetime(s.reconfigured, dialect)
        ),
    );
    if s.graceful_restart_recovery {
        reply.push(24, "Graceful restart recovery in progress");
    }
    reply.push(13, "Daemon is up and running");
    reply
}

/// Whether the snapshot has a BFD protocol row (`show bfd sessions` needs one).
fn has_bfd(snapshot: &Snapshot) -> bool {
    snapshot
        .protocols
        .iter()
        .any(|p| matches!(p.kind, ProtoKind::Bfd))
}
