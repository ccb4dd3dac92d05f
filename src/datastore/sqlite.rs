//! The embedded backend: one SQLite file (bundled SQLite), shared safely by several processes.
//!
//! Layout: `kv` holds the live keys with their revisions; `events` is the history that watches
//! replay (one row per changed key, ordered by revision then position in the transaction);
//! `meta` holds the store revision and the compacted revision; `leases` holds deadlines in
//! wall-clock milliseconds so every process agrees on them.
//!
//! Concurrency: every write is one `BEGIN IMMEDIATE` transaction (the database's single writer
//! lock, waited for up to `busy_timeout`), so revisions are allocated without gaps or races across
//! processes. WAL mode lets readers and watchers proceed during writes; `synchronous=FULL` makes a
//! committed allocation survive a power cut, as etcd's fsync does.
//!
//! Watches poll the `events` table at once after a write by this process, and when another
//! connection (another process) has committed: while a store has watches, one task per store
//! asks its own connection `PRAGMA data_version` every 20 ms (no table read, no blocking-pool
//! hop) and wakes the watches when it moved, so a write elsewhere is seen within one interval
//! while an idle store costs next to nothing. A watch also polls at least every second
//! regardless, which sweeps expired leases; readers and writers sweep them too.
//!
//! History is trimmed automatically: every 1,000 revisions, events older than `history` (default
//! 10,000 revisions) are compacted, as etcd's auto-compaction does.

use super::*;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// A watch reads the `events` table at least this often, changes or not (lease expiry).
const FULL_POLL_EVERY: Duration = Duration::from_secs(1);
const DEFAULT_HISTORY: i64 = 10_000;
const AUTO_COMPACT_EVERY: i64 = 1_000;
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A datastore in one SQLite file.
pub struct SqliteStore {
    path: String,
    prefix: String,
    conn: Arc<Mutex<Connection>>,
    notify: Arc<Notify>,
    history: i64,
    /// Whether the external-change ticker runs (started by the first watch).
    ticker: Arc<std::sync::atomic::AtomicBool>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`; `path` may end in `?history=N`.
    pub fn open(path: &str, prefix: &str) -> Result<SqliteStore> {
        let (path, history) = match path.split_once("?history=") {
            Some((p, h)) => {
                let history = h.parse().map_err(|_| DatastoreError::InvalidUrl {
                    url: format!("sqlite://{path}"),
                    reason: "history must be a number of revisions".into(),
                })?;
                (p, history)
            }
            None => (path, DEFAULT_HISTORY),
        };
        if path.is_empty() || !path.starts_with('/') {
            return Err(DatastoreError::InvalidUrl {
                url: format!("sqlite://{path}"),
                reason: "give an absolute path: sqlite:///var/lib/routed/routed.db".into(),
            });
        }
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(|e| DatastoreError::Unavailable {
                url: format!("sqlite://{path}"),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        let conn = open_connection(path)?;
        Ok(SqliteStore {
            path: path.to_string(),
            prefix: prefix.to_string(),
            conn: Arc::new(Mutex::new(conn)),
            notify: Arc::new(Notify::new()),
            history,
            ticker: Arc::default(),
        })
    }

    /// Starts the task that wakes this store's watches when another connection commits (once;
    /// it ends, and may start again, when the store and all its watches are gone or it fails).
    fn start_ticker(&self) {
        use std::sync::atomic::Ordering;
        if self.ticker.swap(true, Ordering::AcqRel) {
            return;
        }
        let conn = match open_connection(&self.path) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(store = %self.path, %error, "no change ticker; watches poll every second");
                self.ticker.store(false, Ordering::Release);
                return;
            }
        };
        let notify = Arc::downgrade(&self.notify);
        let running = self.ticker.clone();
        tokio::spawn(async move {
            let mut last = None;
            let mut interval = tokio::time::interval(POLL_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                // The store and every watch hold the Notify: when it is gone, so are they.
                let Some(notify) = notify.upgrade() else {
                    break;
                };
                let version = conn
                    .prepare_cached("PRAGMA data_version")
                    .and_then(|mut statement| statement.query_row([], |r| r.get::<_, i64>(0)));
                match version {
                    Ok(version) if last != Some(version) => {
                        if last.is_some() {
                            notify.notify_waiters();
                        }
                        last = Some(version);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "change ticker failed; watches poll every second");
                        break;
                    }
                }
            }
            running.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs `f` on the shared connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        run_on(self.conn.clone(), &self.path, what, f).await
    }
}

async fn run_on<T: Send + 'static>(
    conn: Arc<Mutex<Connection>>,
    path: &str,
    what: &'static str,
    f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let mut guard = conn.lock().map_err(|_| DatastoreError::Backend {
            context: format!("sqlite {path}: {what}"),
            reason: "connection lock poisoned by an earlier panic".into(),
        })?;
        f(&mut guard)
    })
    .await
    .map_err(|e| DatastoreError::Backend {
        context: format!("sqlite: {what}"),
        reason: e.to_string(),
    })?
}

fn open_connection(path: &str) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| sql_err(path, "open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(path, "busy_timeout", e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| sql_err(path, "WAL", e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| sql_err(path, "sync", e))?;
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS kv (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
            mod_revision INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL);
         CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;
         CREATE TABLE IF NOT EXISTS events (
            revision INTEGER NOT NULL, seq INTEGER NOT NULL, key TEXT NOT NULL,
            deleted INTEGER NOT NULL, value BLOB, create_revision INTEGER NOT NULL,
            version INTEGER NOT NULL, lease INTEGER NOT NULL, PRIMARY KEY (revision, seq));
         CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compact_revision', 0);
         CREATE TABLE IF NOT EXISTS leases (
            id INTEGER PRIMARY KEY AUTOINCREMENT, ttl_ms INTEGER NOT NULL,
            expires_at_ms INTEGER NOT NULL);
         COMMIT;",
    )
    .map_err(|e| sql_err(path, "create schema", e))?;
    Ok(conn)
}

fn sql_err(path: &str, what: &str, e: rusqlite::Error) -> DatastoreError {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        DatastoreError::Unavailable {
            url: format!("sqlite://{path}"),
            reason: format!("{what}: {e}"),
        }
    } else {
        DatastoreError::Backend {
            context: format!("sqlite {path}: {what}"),
            reason: e.to_string(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The first key after every key starting with `prefix` (for range scans).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

/// The writes of one transaction: allocates the next revision on first change.
struct Writer<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    base: Revision,
    changed: bool,
    seq: i64,
}

impl<'a> Writer<'a> {
    fn begin(tx: &'a rusqlite::Transaction<'a>) -> rusqlite::Result<Writer<'a>> {
        let base = tx.query_row("SELECT value FROM meta WHERE name='revision'", [], |r| {
            r.get(0)
        })?;
        Ok(Writer {
            tx,
            base,
            changed: false,
            seq: 0,
        })
    }

    fn revision(&self) -> Revision {
        self.base + i64::from(self.changed)
    }

    fn next(&mut self) -> Revision {
        self.changed = true;
        self.base + 1
    }

    fn get(&self, key: &str) -> rusqlite::Result<Option<KeyValue>> {
        self.tx
            .query_row(
                "SELECT key, value, create_revision, mod_revision, version, lease FROM kv WHERE key=?1",
                [key],
                row_to_kv,
            )
            .optional()
    }

    fn put(&mut self, key: &str, value: &[u8], lease: LeaseId) -> rusqlite::Result<()> {
        let rev = self.next();
        let (create, version) = match self.get(key)? {
            Some(old) => (old.create_revision, old.version + 1),
            None => (rev, 1),
        };
        self.tx.execute(
            "INSERT OR REPLACE INTO kv VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![key, value, create, rev, version, lease],
        )?;
        self.record(key, false, Some(value), create, version, lease)
    }

    fn delete(&mut self, key: &str) -> rusqlite::Result<bool> {
        let Some(old) = self.get(key)? else {
            return Ok(false);
        };
        self.next();
        self.tx.execute("DELETE FROM kv WHERE key=?1", [key])?;
        self.record(key, true, None, old.create_revision, old.version, old.lease)?;
        Ok(true)
    }

    fn record(
        &mut self,
        key: &str,
        deleted: bool,
        value: Option<&[u8]>,
        create: Revision,
        version: i64,
        lease: LeaseId,
    ) -> rusqlite::Result<()> {
        self.seq += 1;
        self.tx.execute(
            "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                self.base + 1,
                self.seq,
                key,
                deleted,
                value,
                create,
                version,
                lease
            ],
        )?;
        Ok(())
    }

    /// Deletes keys of expired leases (or of `only`), and the leases.
    fn expire_leases(&mut self, only: Option<LeaseId>) -> rusqlite::Result<()> {
        let ids: Vec<i64> = match only {
            Some(id) => vec![id],
            None => {
                let mut stmt = self
                    .tx
                    .prepare("SELECT id FROM leases WHERE expires_at_ms < ?1")?;
                let rows = stmt.query_map([now_ms()], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            }
        };
        for id in ids {
            let keys: Vec<String> = {
                let mut stmt = self
                    .tx
                    .prepare("SELECT key FROM kv WHERE lease=?1 ORDER BY key")?;
                let rows = stmt.query_map([id], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for key in keys {
                self.delete(&key)?;
            }
            self.tx.execute("DELETE FROM leases WHERE id=?1", [id])?;
        }
        Ok(())
    }

    fn finish(self, history: i64) -> rusqlite::Result<Revision> {
        let rev = self.revision();
        if self.changed {
            self.tx
                .execute("UPDATE meta SET value=?1 WHERE name='revision'", [rev])?;
            if history > 0 && rev % AUTO_COMPACT_EVERY == 0 && rev > history {
                compact_history(self.tx, rev - history)?;
            }
        }
        Ok(rev)
    }
}

fn compact_history(tx: &rusqlite::Transaction<'_>, revision: Revision) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM events WHERE revision < ?1", [revision])?;
    tx.execute(
        "UPDATE meta SET value=max(value, ?1) WHERE name='compact_revision'",
        [revision],
    )?;
    Ok(())
}

fn row_to_kv(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
        version: row.get(4)?,
        lease: row.get(5)?,
    })
}

fn has_expired_leases(conn: &Connection) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS(SELECT 1 FROM leases WHERE expires_at_ms < ?1)")?
        .query_row([now_ms()], |r| r.get(0))
}

/// Sweeps expired leases in a write transaction when there are any; true if it wrote.
fn sweep_leases(conn: &mut Connection, history: i64) -> rusqlite::Result<bool> {
    if !has_expired_leases(conn)? {
        return Ok(false);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut w = Writer::begin(&tx)?;
    w.expire_leases(None)?;
    let changed = w.changed;
    w.finish(history)?;
    tx.commit()?;
    Ok(changed)
}

fn strip(prefix: &str, mut kv: KeyValue) -> KeyValue {
    if let Some(rest) = kv.key.strip_prefix(prefix) {
        kv.key = rest.to_string();
    }
    kv
}

fn list_range(
    conn: &mut Connection,
    start: &str,
    end: Option<&str>,
    keys_only: bool,
) -> rusqlite::Result<ListResponse> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let revision = tx.query_row("SELECT value FROM meta WHERE name='revision'", [], |r| {
        r.get(0)
    })?;
    let value = if keys_only { "x''" } else { "value" };
    let sql = format!(
        "SELECT key, {value}, create_revision, mod_revision, version, lease FROM kv
         WHERE key >= ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key"
    );
    let kvs = {
        let mut stmt = tx.prepare(&sql)?;
        let rows = stmt.query_map(params![start, end], row_to_kv)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
    Ok(ListResponse { kvs, revision })
}

#[async_trait]
impl Datastore for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let (full, prefix, path, history) = (
            self.full_key(key),
            self.prefix.clone(),
            self.path.clone(),
            self.history,
        );
        let notify = self.notify.clone();
        self.run("get", move |conn| {
            if sweep_leases(conn, history).map_err(|e| sql_err(&path, "expire leases", e))? {
                notify.notify_waiters();
            }
            conn.query_row(
                "SELECT key, value, create_revision, mod_revision, version, lease FROM kv WHERE key=?1",
                [&full],
                row_to_kv,
            )
            .optional()
            .map(|kv| kv.map(|kv| strip(&prefix, kv)))
            .map_err(|e| sql_err(&path, "get", e))
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<ListResponse> {
        self.list_impl(prefix, false).await
    }

    async fn list_keys(&self, prefix: &str) -> Result<ListResponse> {
        self.list_impl(prefix, true).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let (prefix, path, history) = (self.prefix.clone(), self.path.clone(), self.history);
        let resp = self
            .run("txn", move |conn| {
                run_txn(conn, &prefix, txn, history).map_err(|e| match e {
                    TxnError::Sql(e) => sql_err(&path, "txn", e),
                    TxnError::Store(e) => e,
                })
            })
            .await?;
        self.notify.notify_waiters();
        Ok(resp)
    }

    async fn watch(&self, prefix: &str, from_revision: Revision) -> Result<Watch> {
        let conn = open_connection(&self.path)?;
        let conn = Arc::new(Mutex::new(conn));
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        let mut next = from_revision;
        if next <= 0 {
            let current: Revision = run_on(conn.clone(), &self.path, "watch", |c| {
                c.query_row("SELECT value FROM meta WHERE name='revision'", [], |r| {
                    r.get(0)
                })
                .map_err(|e| DatastoreError::Backend {
                    context: "watch".into(),
                    reason: e.to_string(),
                })
            })
            .await?;
            next = current + 1;
        }
        let (tx, rx) = mpsc::channel(1024);
        let poller = WatchPoller {
            conn,
            path: self.path.clone(),
            prefix: self.prefix.clone(),
            start,
            end,
            next,
            history: self.history,
            notify: self.notify.clone(),
        };
        self.start_ticker();
        tokio::spawn(poller.run(tx));
        Ok(Watch { rx, _guard: None })
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let path = self.path.clone();
        self.run("compact", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&path, "compact", e))?;
            let current: Revision = tx
                .query_row("SELECT value FROM meta WHERE name='revision'", [], |r| {
                    r.get(0)
                })
                .map_err(|e| sql_err(&path, "compact", e))?;
            if revision > current {
                return Err(DatastoreError::Backend {
                    context: format!("compact to {revision}"),
                    reason: format!("future revision (current {current})"),
                });
            }
            compact_history(&tx, revision).map_err(|e| sql_err(&path, "compact", e))?;
            tx.commit().map_err(|e| sql_err(&path, "compact", e))
        })
        .await
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId> {
        let path = self.path.clone();
        let ttl_ms = ttl.as_millis() as i64;
        self.run("lease grant", move |conn| {
            conn.execute(
                "INSERT INTO leases (ttl_ms, expires_at_ms) VALUES (?1, ?2)",
                params![ttl_ms, now_ms() + ttl_ms],
            )
            .map_err(|e| sql_err(&path, "lease grant", e))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn lease_keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let path = self.path.clone();
        self.run("lease keepalive", move |conn| {
            let ttl: Option<i64> = conn
                .query_row(
                    "UPDATE leases SET expires_at_ms = ?2 + ttl_ms
                     WHERE id=?1 AND expires_at_ms >= ?2 RETURNING ttl_ms",
                    params![lease, now_ms()],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| sql_err(&path, "lease keepalive", e))?;
            match ttl {
                Some(ms) => Ok(Duration::from_millis(ms.max(0) as u64)),
                None => Err(DatastoreError::LeaseNotFound(lease)),
            }
        })
        .await
    }

    async fn lease_revoke(&self, lease: LeaseId) -> Result<()> {
        let (path, history) = (self.path.clone(), self.history);
        self.run("lease revoke", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| sql_err(&path, "lease revoke", e))?;
            let exists: bool = tx
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM leases WHERE id=?1)",
                    [lease],
                    |r| r.get(0),
                )
                .map_err(|e| sql_err(&path, "lease revoke", e))?;
            if !exists {
                return Err(DatastoreError::LeaseNotFound(lease));
            }
            let mut w = Writer::begin(&tx).map_err(|e| sql_err(&path, "lease revoke", e))?;
            w.expire_leases(Some(lease))
                .map_err(|e| sql_err(&path, "lease revoke", e))?;
            w.finish(history)
                .map_err(|e| sql_err(&path, "lease revoke", e))?;
            tx.commit().map_err(|e| sql_err(&path, "lease revoke", e))
        })
        .await?;
        self.notify.notify_waiters();
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path)
    }
}

impl SqliteStore {
    async fn list_impl(&self, prefix: &str, keys_only: bool) -> Result<ListResponse> {
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        let (strip_prefix, path, history) = (self.prefix.clone(), self.path.clone(), self.history);
        self.run("list", move |conn| {
            sweep_leases(conn, history).map_err(|e| sql_err(&path, "expire leases", e))?;
            let mut resp = list_range(conn, &start, end.as_deref(), keys_only)
                .map_err(|e| sql_err(&path, "list", e))?;
            resp.kvs = resp
                .kvs
                .into_iter()
                .map(|kv| strip(&strip_prefix, kv))
                .collect();
            Ok(resp)
        })
        .await
    }
}

enum TxnError {
    Sql(rusqlite::Error),
    Store(DatastoreError),
}

impl From<rusqlite::Error> for TxnError {
    fn from(e: rusqlite::Error) -> Self {
        TxnError::Sql(e)
    }
}

fn run_txn(
    conn: &mut Connection,
    prefix: &str,
    txn: Txn,
    history: i64,
) -> Result<TxnResponse, TxnError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut w = Writer::begin(&tx)?;
    w.expire_leases(None)?;
    let mut succeeded = true;
    for cmp in &txn.compare {
        let found = w
            .get(&format!("{prefix}{}", cmp.key))?
            .map_or(0, |kv| kv.mod_revision);
        if found != cmp.mod_revision {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { txn.success } else { txn.failure };
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            Op::Get { key } => OpResult::Get(
                w.get(&format!("{prefix}{key}"))?
                    .map(|kv| strip(prefix, kv)),
            ),
            Op::Put { key, value, lease } => {
                if lease != 0 {
                    let live: bool = tx.query_row(
                        "SELECT EXISTS(SELECT 1 FROM leases WHERE id=?1)",
                        [lease],
                        |r| r.get(0),
                    )?;
                    if !live {
                        return Err(TxnError::Store(DatastoreError::LeaseNotFound(lease)));
                    }
                }
                w.put(&format!("{prefix}{key}"), &value, lease)?;
                OpResult::Put
            }
            Op::Delete { key } => OpResult::Delete {
                deleted: w.delete(&format!("{prefix}{key}"))?,
            },
        };
        results.push(result);
    }
    let revision = w.finish(history)?;
    tx.commit()?;
    Ok(TxnResponse {
        succeeded,
        revision,
        results,
    })
}

/// Follows the `events` table for one watch.
struct WatchPoller {
    conn: Arc<Mutex<Connection>>,
    path: String,
    prefix: String,
    start: String,
    end: Option<String>,
    next: Revision,
    history: i64,
    notify: Arc<Notify>,
}

enum Poll {
    /// Events found, and the revision the next poll starts from.
    Events(Vec<WatchEvent>, Revision),
    Compacted(Revision),
}

impl WatchPoller {
    async fn run(mut self, tx: mpsc::Sender<Result<WatchEvent, DatastoreError>>) {
        let notify = self.notify.clone();
        loop {
            let mut notified = std::pin::pin!(notify.notified());
            let polled = std::time::Instant::now();
            match self.poll().await {
                Ok(Poll::Compacted(compact_revision)) => {
                    let _ = tx
                        .send(Ok(WatchEvent::Compacted { compact_revision }))
                        .await;
                    return;
                }
                Ok(Poll::Events(events, next)) => {
                    let advanced = next > self.next;
                    for event in events {
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    self.next = next;
                    if advanced {
                        continue;
                    }
                }
                Err(e) => {
                    tracing::warn!(store = %self.path, error = %e, "watch poll failed; retrying");
                }
            }
            // Until this process writes, another connection commits (the ticker), or a second
            // passes.
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(FULL_POLL_EVERY.saturating_sub(polled.elapsed())) => {}
                _ = tx.closed() => return,
            }
        }
    }

    async fn poll(&self) -> Result<Poll> {
        let (start, end, prefix) = (self.start.clone(), self.end.clone(), self.prefix.clone());
        let (next, history, path) = (self.next, self.history, self.path.clone());
        run_on(self.conn.clone(), &self.path, "watch", move |conn| {
            sweep_leases(conn, history).map_err(|e| sql_err(&path, "expire leases", e))?;
            read_events(conn, &start, end.as_deref(), &prefix, next)
                .map_err(|e| sql_err(&path, "watch", e))
        })
        .await
    }
}

fn read_events(
    conn: &mut Connection,
    start: &str,
    end: Option<&str>,
    prefix: &str,
    next: Revision,
) -> rusqlite::Result<Poll> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let compacted: Revision = tx
        .prepare_cached("SELECT value FROM meta WHERE name='compact_revision'")?
        .query_row([], |r| r.get(0))?;
    if next < compacted {
        return Ok(Poll::Compacted(compacted));
    }
    let mut stmt = tx.prepare_cached(
        "SELECT revision, key, deleted, value, create_revision, version, lease FROM events
         WHERE revision >= ?1 AND revision < ?2 AND key >= ?3 AND (?4 IS NULL OR key < ?4)
         ORDER BY revision, seq",
    )?;
    let rows = stmt.query_map(params![next, next + 1000, start, end], |r| {
        let revision: Revision = r.get(0)?;
        let key: String = r.get(1)?;
        let key = key.strip_prefix(prefix).map(str::to_string).unwrap_or(key);
        let deleted: bool = r.get(2)?;
        if deleted {
            return Ok(WatchEvent::Delete {
                key,
                mod_revision: revision,
            });
        }
        Ok(WatchEvent::Put(KeyValue {
            key,
            value: r.get::<_, Option<Vec<u8>>>(3)?.unwrap_or_default(),
            create_revision: r.get(4)?,
            mod_revision: revision,
            version: r.get(5)?,
            lease: r.get(6)?,
        }))
    })?;
    let events = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    // Everything in [next, window end) up to the snapshot's revision has been read.
    let current: Revision = tx
        .prepare_cached("SELECT value FROM meta WHERE name='revision'")?
        .query_row([], |r| r.get(0))?;
    Ok(Poll::Events(
        events,
        (current + 1).min(next + 1000).max(next),
    ))
}
