//! The production backend: etcd v3 through `etcd-client` (gRPC).
//!
//! URL forms: `etcd://10.0.0.1:2379,10.0.0.2:2379` (plain) and `etcds://...` (TLS). With TLS the
//! CA, client certificate and key come from [`TlsFiles`] (`--etcd-ca-file`, `--etcd-cert-file`,
//! `--etcd-key-file`, or `ROUTED_ETCD_CA_FILE` / `_CERT_FILE` / `_KEY_FILE`). Any of the three may be
//! given alone: a CA alone verifies the server, a certificate and key authenticate routed.
//!
//! Every trait call is one gRPC round trip (a watch is one stream); the client keeps one HTTP/2
//! connection per endpoint and is cheap to clone, so calls run concurrently.

use super::*;
use etcd_client as ec;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A datastore backed by an etcd cluster.
pub struct EtcdStore {
    client: ec::Client,
    prefix: String,
    url: String,
}

impl EtcdStore {
    /// Connects to the endpoints of `config.url`.
    pub async fn connect(config: &DatastoreConfig) -> Result<EtcdStore> {
        let url = config.url.clone();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("etcds://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("etcd://") {
            (false, rest)
        } else {
            return Err(DatastoreError::InvalidUrl {
                url,
                reason: "expected etcd:// or etcds://".into(),
            });
        };
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|hostport| format!("{scheme}://{hostport}"))
            .collect();
        if endpoints.is_empty()
            || endpoints
                .iter()
                .any(|e| !e[scheme.len() + 3..].contains(':'))
        {
            return Err(DatastoreError::InvalidUrl {
                url,
                reason:
                    "list endpoints as HOST:PORT separated by commas, e.g. etcd://127.0.0.1:2379"
                        .into(),
            });
        }
        let mut options = ec::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if tls || config.tls != TlsFiles::default() {
            options = options.with_tls(tls_options(&config.tls, &url)?);
        }
        let client = ec::Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| unavailable(&url, "connect", e))?;
        Ok(EtcdStore {
            client,
            prefix: config.prefix.clone(),
            url,
        })
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn convert_kv(&self, kv: &ec::KeyValue) -> Result<KeyValue> {
        let key = kv.key_str().map_err(|e| DatastoreError::Corrupt {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            reason: format!("key is not UTF-8: {e}"),
        })?;
        let key = key
            .strip_prefix(self.prefix.as_str())
            .unwrap_or(key)
            .to_string();
        Ok(KeyValue {
            key,
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
            version: kv.version(),
            lease: kv.lease(),
        })
    }

    async fn range(&self, prefix: &str, keys_only: bool) -> Result<ListResponse> {
        let mut options = ec::GetOptions::new().with_prefix();
        if keys_only {
            options = options.with_keys_only();
        }
        let resp = self
            .client
            .kv_client()
            .get(self.full_key(prefix), Some(options))
            .await
            .map_err(|e| self.error("list", e))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let kvs = resp
            .kvs()
            .iter()
            .map(|kv| self.convert_kv(kv))
            .collect::<Result<_>>()?;
        Ok(ListResponse { kvs, revision })
    }

    fn error(&self, what: &str, e: ec::Error) -> DatastoreError {
        classify(&self.url, what, e)
    }
}

fn unavailable(url: &str, what: &str, e: ec::Error) -> DatastoreError {
    DatastoreError::Unavailable {
        url: url.to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// Transport failures and unavailable/deadline statuses are "try again"; the rest are errors.
fn classify(url: &str, what: &str, e: ec::Error) -> DatastoreError {
    match &e {
        ec::Error::TransportError(_) | ec::Error::IoError(_) => unavailable(url, what, e),
        ec::Error::GRpcStatus(status) => match status.code() {
            tonic_code::Unavailable | tonic_code::DeadlineExceeded | tonic_code::Cancelled => {
                unavailable(url, what, e)
            }
            _ => DatastoreError::Backend {
                context: format!("etcd {url}: {what}"),
                reason: e.to_string(),
            },
        },
        _ => DatastoreError::Backend {
            context: format!("etcd {url}: {what}"),
            reason: e.to_string(),
        },
    }
}

use tonic::Code as tonic_code;

fn tls_options(files: &TlsFiles, url: &str) -> Result<ec::TlsOptions> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|e| DatastoreError::InvalidUrl {
            url: url.to_string(),
            reason: format!("cannot read TLS file {path}: {e}"),
        })
    };
    let mut tls = ec::TlsOptions::new();
    if let Some(ca) = &files.ca_file {
        tls = tls.ca_certificate(ec::Certificate::from_pem(read(ca)?));
    }
    match (&files.cert_file, &files.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(ec::Identity::from_pem(read(cert)?, read(key)?));
        }
        (None, None) => {}
        _ => {
            return Err(DatastoreError::InvalidUrl {
                url: url.to_string(),
                reason: "a client certificate needs both --etcd-cert-file and --etcd-key-file"
                    .into(),
            })
        }
    }
    Ok(tls)
}

#[async_trait]
impl Datastore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(self.full_key(key), None)
            .await
            .map_err(|e| self.error("get", e))?;
        resp.kvs().first().map(|kv| self.convert_kv(kv)).transpose()
    }

    async fn list(&self, prefix: &str) -> Result<ListResponse> {
        self.range(prefix, false).await
    }

    async fn list_keys(&self, prefix: &str) -> Result<ListResponse> {
        self.range(prefix, true).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let compares: Vec<ec::Compare> = txn
            .compare
            .iter()
            .map(|c| {
                ec::Compare::mod_revision(
                    self.full_key(&c.key),
                    ec::CompareOp::Equal,
                    c.mod_revision,
                )
            })
            .collect();
        let to_op = |op: &Op| match op {
            Op::Get { key } => ec::TxnOp::get(self.full_key(key), None),
            Op::Put { key, value, lease } => {
                let options = (*lease != 0).then(|| ec::PutOptions::new().with_lease(*lease));
                ec::TxnOp::put(self.full_key(key), value.clone(), options)
            }
            Op::Delete { key } => ec::TxnOp::delete(self.full_key(key), None),
        };
        let success: Vec<ec::TxnOp> = txn.success.iter().map(to_op).collect();
        let failure: Vec<ec::TxnOp> = txn.failure.iter().map(to_op).collect();
        let request = ec::Txn::new()
            .when(compares)
            .and_then(success)
            .or_else(failure);
        let resp = self.client.kv_client().txn(request).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("requested lease not found") {
                DatastoreError::LeaseNotFound(lease_of(&txn))
            } else {
                self.error("txn", e)
            }
        })?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut results = Vec::new();
        for op in resp.op_responses() {
            results.push(match op {
                ec::TxnOpResponse::Get(get) => OpResult::Get(
                    get.kvs()
                        .first()
                        .map(|kv| self.convert_kv(kv))
                        .transpose()?,
                ),
                ec::TxnOpResponse::Put(_) => OpResult::Put,
                ec::TxnOpResponse::Delete(del) => OpResult::Delete {
                    deleted: del.deleted() > 0,
                },
                ec::TxnOpResponse::Txn(_) => {
                    return Err(DatastoreError::Backend {
                        context: "etcd txn".into(),
                        reason: "unexpected nested transaction in response".into(),
                    })
                }
            });
        }
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision,
            results,
        })
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch> {
        let mut options = ec::WatchOptions::new().with_prefix();
        if from_revision > 0 {
            options = options.with_start_revision(from_revision);
        }
        let mut stream = self
            .client
            .watch_client()
            .watch(self.full_key(prefix), Some(options))
            .await
            .map_err(|e| self.error("watch", e))?;
        let (tx, rx) = mpsc::channel(1024);
        let (prefix, url) = (self.prefix.clone(), self.url.clone());
        let converter = EtcdStore {
            client: self.client.clone(),
            prefix,
            url: url.clone(),
        };
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    m = stream.message() => m,
                    _ = tx.closed() => return,
                };
                let resp = match message {
                    Ok(Some(resp)) => resp,
                    Ok(None) => {
                        let _ = tx
                            .send(Err(DatastoreError::Unavailable {
                                url,
                                reason: "watch stream closed".into(),
                            }))
                            .await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(classify(&url, "watch", e))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let compact_revision = resp.compact_revision();
                    let _ = tx
                        .send(Ok(WatchEvent::Compacted { compact_revision }))
                        .await;
                    return;
                }
                if resp.canceled() {
                    let reason = format!("watch canceled: {}", resp.cancel_reason());
                    let _ = tx
                        .send(Err(DatastoreError::Unavailable { url, reason }))
                        .await;
                    return;
                }
                for event in resp.events() {
                    let Some(kv) = event.kv() else { continue };
                    let out = match converter.convert_kv(kv) {
                        Err(e) => Err(e),
                        Ok(kv) => Ok(match event.event_type() {
                            ec::EventType::Put => WatchEvent::Put(kv),
                            ec::EventType::Delete => WatchEvent::Delete {
                                key: kv.key,
                                mod_revision: kv.mod_revision,
                            },
                        }),
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Watch { rx, _guard: None })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.client
            .kv_client()
            .compact(revision, Some(ec::CompactionOptions::new().with_physical()))
            .await
            .map_err(|e| self.error("compact", e))?;
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self
            .client
            .lease_client()
            .grant(secs, None)
            .await
            .map_err(|e| self.error("lease grant", e))?;
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let (mut keeper, mut stream) = self
            .client
            .lease_client()
            .keep_alive(lease)
            .await
            .map_err(|e| lease_error(self, lease, "lease keepalive", e))?;
        keeper
            .keep_alive()
            .await
            .map_err(|e| lease_error(self, lease, "lease keepalive", e))?;
        let resp = stream
            .message()
            .await
            .map_err(|e| lease_error(self, lease, "lease keepalive", e))?;
        match resp {
            Some(r) if r.ttl() > 0 => Ok(Duration::from_secs(r.ttl() as u64)),
            _ => Err(DatastoreError::LeaseNotFound(lease)),
        }
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        self.client
            .lease_client()
            .revoke(lease)
            .await
            .map_err(|e| lease_error(self, lease, "lease revoke", e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// etcd reports an unknown or expired lease only in the error text.
fn lease_error(store: &EtcdStore, lease: LeaseId, what: &str, e: ec::Error) -> DatastoreError {
    if e.to_string().contains("lease not found") {
        DatastoreError::LeaseNotFound(lease)
    } else {
        store.error(what, e)
    }
}

fn lease_of(txn: &Txn) -> LeaseId {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            Op::Put { lease, .. } if *lease != 0 => Some(*lease),
            _ => None,
        })
        .unwrap_or(0)
}
