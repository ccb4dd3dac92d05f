//! The socket side: accepts clients on a unix socket, greets each with BIRD's welcome line,
//! reads one request per line, asks the [`Source`] for a fresh [`Snapshot`] and writes the
//! rendered reply. A line longer than [`MAX_LINE`] gets a syntax error and the connection is
//! closed, so a client cannot grow the server's buffers; at most [`MAX_CLIENTS`] at once.

use crate::command::Command;
use crate::model::Snapshot;
use crate::{render, Dialect};
use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line read (BIRD's own commands are far shorter).
pub const MAX_LINE: usize = 4096;
/// Clients served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 64;

/// Where the rows come from: called once per parsed command, which it may use to skip rows
/// the command does not show (routes are only needed by `show route`).
pub trait Source: Send + Sync + 'static {
    fn snapshot(&self, command: &Command) -> impl Future<Output = Snapshot> + Send;
}

/// Binds `path`, replacing a stale socket file left by an earlier run.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// Serves clients until the task is dropped. Accept errors are returned (the caller logs).
pub async fn serve<S: Source>(
    listener: UnixListener,
    dialect: Dialect,
    source: Arc<S>,
) -> io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let permit = slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| io::Error::other("client limit closed"))?;
        let (stream, _) = listener.accept().await?;
        let source = source.clone();
        tokio::spawn(async move {
            // A client that goes away mid-reply is not an error of ours.
            let _ = serve_client(stream, dialect, source.as_ref()).await;
            drop(permit);
        });
    }
}

async fn serve_client<S: Source>(
    stream: UnixStream,
    dialect: Dialect,
    source: &S,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    write
        .write_all(
            crate::format_reply_line(1, false, &format!("BIRD {} ready.", dialect.version()))
                .as_bytes(),
        )
        .await?;
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            write
                .write_all(render::too_long(dialect).encode().as_bytes())
                .await?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let reply = match crate::command::parse(text) {
            Ok(cmd) => {
                let snapshot = source.snapshot(&cmd).await;
                render::render(dialect, &cmd, &snapshot)
                    .unwrap_or_else(|e| render::error_reply(dialect, &e))
            }
            Err(e) => render::error_reply(dialect, &e),
        };
        write.write_all(reply.encode().as_bytes()).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    struct Empty;
    impl Source for Empty {
        async fn snapshot(&self, _: &Command) -> Snapshot {
            Snapshot::default()
        }
    }

    #[tokio::test]
    async fn a_client_gets_the_welcome_replies_and_a_long_line_closes_it() {
        let dir = tempfile_dir();
        let path = dir.join("bird.ctl");
        let listener = bind(&path).unwrap();
        let server = tokio::spawn(serve(listener, Dialect::Bird1, Arc::new(Empty)));
        let mut client = UnixStream::connect(&path).await.unwrap();
        client
            .write_all(b"show protocols\nshow nonsense\n")
            .await
            .unwrap();
        let mut got = String::new();
        let want = "0001 BIRD 1.6.8 ready.\n2002-name     proto    table    state  since       info\n0000 \n9001 syntax error\n";
        let mut buf = [0u8; 512];
        while got.len() < want.len() {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(got, want);
        client.write_all(&vec![b'x'; MAX_LINE + 10]).await.unwrap();
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "9001 syntax error\n");
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bird-compat-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
