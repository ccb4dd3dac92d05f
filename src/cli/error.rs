//! routectl's errors: one enum, one exit code per variant (docs/operations.md, "routectl exit
//! codes"). The layers below return their own typed errors (`IpamError`, `DatastoreError`,
//! `ValidationError`, `ClientError`); they become a [`CliError`] here, keeping their message and
//! the thing they concern (field, key, pool, handle, socket), and `cli::run` prints it once.

use crate::api::client::ClientError;
use crate::api::v1::ErrorKind;
use crate::datastore::DatastoreError;
use crate::ipam::IpamError;
use crate::model::ValidationError;
use std::path::PathBuf;
use std::process::ExitCode;
use thiserror::Error;

/// Exit statuses of routectl. 0 is success; 1 is also what `ipam check` returns when it finds
/// an inconsistency.
pub mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INVALID: u8 = 3;
    pub const NOT_FOUND: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const EXHAUSTED: u8 = 6;
    pub const DATASTORE_UNAVAILABLE: u8 = 7;
    pub const AGENT_UNREACHABLE: u8 = 8;
}

#[derive(Debug, Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (clap's own errors exit 2 as well).
    #[error("{0}")]
    Usage(String),
    /// An argument (or a file it names) is invalid; `field` names it (`--cidr`, `--as`, ...).
    #[error("{reason} ({field})")]
    Invalid { field: String, reason: String },
    /// What the command names does not exist (`what`: `peer tor1`, `pool p`, `10.0.0.4`...).
    #[error("{message}")]
    NotFound { what: String, message: String },
    /// It exists already, is in use, changed concurrently or was handed out again.
    #[error("{message}")]
    Conflict { what: String, message: String },
    /// No address left to allocate.
    #[error("{message}")]
    Exhausted { message: String },
    /// The datastore at `url` cannot be reached now; retry later.
    #[error("{message}")]
    DatastoreUnavailable { url: String, message: String },
    /// The local agent does not answer at `socket` (not running, or busy).
    #[error("{message}")]
    AgentUnreachable { socket: PathBuf, message: String },
    /// Anything else (a corrupt record, an output that cannot be written...).
    #[error("{0}")]
    Failed(String),
    /// Documents given to apply/create/replace/delete are invalid; `message` names the file,
    /// the document and the field of each.
    #[error("{message}")]
    InvalidDocument { message: String },
}

impl CliError {
    /// The exit status of this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => exit::USAGE,
            CliError::Invalid { .. } => exit::INVALID,
            CliError::NotFound { .. } => exit::NOT_FOUND,
            CliError::Conflict { .. } => exit::CONFLICT,
            CliError::Exhausted { .. } => exit::EXHAUSTED,
            CliError::DatastoreUnavailable { .. } => exit::DATASTORE_UNAVAILABLE,
            CliError::AgentUnreachable { .. } => exit::AGENT_UNREACHABLE,
            CliError::Failed(_) => exit::FAILED,
            CliError::InvalidDocument { .. } => exit::INVALID,
        }
    }

    pub fn exit(&self) -> ExitCode {
        ExitCode::from(self.exit_code())
    }

    /// Invalid input in `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> CliError {
        CliError::Invalid {
            field: field.to_string(),
            reason: reason.to_string(),
        }
    }

    pub fn not_found(what: impl Into<String>, message: impl std::fmt::Display) -> CliError {
        CliError::NotFound {
            what: what.into(),
            message: message.to_string(),
        }
    }

    pub fn conflict(what: impl Into<String>, message: impl std::fmt::Display) -> CliError {
        CliError::Conflict {
            what: what.into(),
            message: message.to_string(),
        }
    }

    /// Opening the datastore at `url` failed: the message says which flag sets it.
    pub fn datastore_open(url: &str, e: DatastoreError) -> CliError {
        let message =
            format!("cannot open datastore {url} (set --datastore or ROUTED_DATASTORE): {e}");
        match e {
            DatastoreError::InvalidUrl { .. } => CliError::invalid("--datastore", message),
            other => match CliError::from(other) {
                CliError::DatastoreUnavailable { url, .. } => {
                    CliError::DatastoreUnavailable { url, message }
                }
                _ => CliError::Failed(message),
            },
        }
    }
}

/// The command-line flag a validation error is about.
fn field_of(e: &ValidationError) -> String {
    match e {
        ValidationError::InvalidName { .. } => "NAME".into(),
        ValidationError::InvalidCidr { .. }
        | ValidationError::HostAddressAsPool { .. }
        | ValidationError::PoolsOverlap { .. } => "--cidr".into(),
        ValidationError::BlockSizeOutOfRange { .. }
        | ValidationError::BlockLargerThanPool { .. } => "--block-size".into(),
        ValidationError::BothEncapsulations { .. } => "--ipip-mode, --vxlan-mode".into(),
        ValidationError::IpipOnIpv6 { .. } => "--ipip-mode".into(),
        ValidationError::InvalidAsNumber(_) => "--as".into(),
        ValidationError::InvalidField { field, .. } => field.clone(),
    }
}

impl From<ValidationError> for CliError {
    fn from(e: ValidationError) -> CliError {
        CliError::invalid(&field_of(&e), e)
    }
}

impl From<DatastoreError> for CliError {
    fn from(e: DatastoreError) -> CliError {
        match &e {
            DatastoreError::Unavailable { url, .. } => CliError::DatastoreUnavailable {
                url: url.clone(),
                message: e.to_string(),
            },
            DatastoreError::InvalidUrl { .. } => CliError::invalid("--datastore", e),
            DatastoreError::AlreadyExists { key } | DatastoreError::Conflict { key, .. } => {
                CliError::conflict(key.clone(), &e)
            }
            DatastoreError::NotFound { key } => CliError::not_found(key.clone(), &e),
            DatastoreError::Compacted { .. }
            | DatastoreError::LeaseNotFound(_)
            | DatastoreError::Backend { .. }
            | DatastoreError::Corrupt { .. } => CliError::Failed(e.to_string()),
        }
    }
}

impl From<IpamError> for CliError {
    fn from(e: IpamError) -> CliError {
        match e {
            IpamError::Datastore(d) => d.into(),
            IpamError::Invalid(v) => v.into(),
            IpamError::NoPools { .. } | IpamError::Exhausted { .. } => CliError::Exhausted {
                message: e.to_string(),
            },
            IpamError::NotAllocated { ip } | IpamError::UnknownAddress { ip } => {
                CliError::not_found(ip.to_string(), &e)
            }
            IpamError::PoolNotFound { ref pool } => CliError::not_found(format!("pool {pool}"), &e),
            IpamError::StaleSequence { ip, .. } => CliError::conflict(ip.to_string(), &e),
            IpamError::PoolExists { ref pool } | IpamError::PoolInUse { ref pool, .. } => {
                CliError::conflict(format!("pool {pool}"), &e)
            }
            IpamError::TooManyRetries { ref what, .. } => CliError::conflict(what.clone(), &e),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> CliError {
        match e {
            ClientError::Unreachable { socket, .. } => CliError::AgentUnreachable {
                message: format!(
                    "routed is not running (no agent answers at {}; start it, or pass --socket)",
                    socket.display()
                ),
                socket,
            },
            ClientError::Slow { socket, after, .. } => CliError::AgentUnreachable {
                message: format!(
                    "routed is running but did not answer within {} s at {} (busy, e.g. loading \
                     a large routing table); try again",
                    after.as_secs(),
                    socket.display()
                ),
                socket,
            },
            ClientError::Api {
                ref socket, kind, ..
            } => match kind {
                ErrorKind::Invalid => CliError::invalid("request", &e),
                ErrorKind::NotFound => CliError::not_found(socket.display().to_string(), &e),
                ErrorKind::Exhausted => CliError::Exhausted {
                    message: e.to_string(),
                },
                ErrorKind::Unavailable => CliError::AgentUnreachable {
                    socket: socket.clone(),
                    message: e.to_string(),
                },
                ErrorKind::Internal => CliError::Failed(e.to_string()),
            },
            ClientError::Protocol { .. } => CliError::Failed(e.to_string()),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> CliError {
        CliError::Failed(format!("cannot write the output: {e}"))
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> CliError {
        CliError::Failed(format!("cannot render JSON: {e}"))
    }
}

impl From<serde_yaml::Error> for CliError {
    fn from(e: serde_yaml::Error) -> CliError {
        CliError::Failed(format!("cannot render YAML: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_exit_code() {
        let errors = [
            CliError::Failed("x".into()),
            CliError::Usage("x".into()),
            CliError::invalid("--cidr", "x"),
            CliError::not_found("peer a", "x"),
            CliError::conflict("peer a", "x"),
            CliError::Exhausted {
                message: "x".into(),
            },
            CliError::DatastoreUnavailable {
                url: "etcd://h:1".into(),
                message: "x".into(),
            },
            CliError::AgentUnreachable {
                socket: "/s".into(),
                message: "x".into(),
            },
        ];
        let codes: Vec<u8> = errors.iter().map(CliError::exit_code).collect();
        assert_eq!(codes, (1..=8).collect::<Vec<u8>>());
    }

    #[test]
    fn lower_layer_errors_keep_their_message_and_get_their_kind() {
        let e = CliError::from(IpamError::PoolInUse {
            pool: "p".into(),
            addresses: 3,
            blocks: 1,
        });
        assert_eq!(e.exit_code(), exit::CONFLICT);
        assert!(e.to_string().contains("--force"), "{e}");
        let e = CliError::from(IpamError::NotAllocated {
            ip: "10.0.0.4".parse().unwrap(),
        });
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
        let e = CliError::from(IpamError::Invalid(ValidationError::InvalidAsNumber(0)));
        assert_eq!(e.exit_code(), exit::INVALID);
        assert_eq!(e.to_string(), "invalid AS number 0: 0 is reserved (--as)");
        let e = CliError::datastore_open(
            "etcd://127.0.0.1:1",
            DatastoreError::Unavailable {
                url: "etcd://127.0.0.1:1".into(),
                reason: "connection refused".into(),
            },
        );
        assert_eq!(e.exit_code(), exit::DATASTORE_UNAVAILABLE);
        assert!(e
            .to_string()
            .starts_with("cannot open datastore etcd://127.0.0.1:1"));
        let e = CliError::from(ClientError::Api {
            socket: "/run/routed/routed.sock".into(),
            status: 404,
            error: "BGP is not running on this node (started with --no-bgp?)".into(),
            kind: ErrorKind::NotFound,
        });
        assert_eq!(e.exit_code(), exit::NOT_FOUND);
    }
}
