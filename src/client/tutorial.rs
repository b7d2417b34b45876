//! Talking to the tutorial's servers: `ferry get --tutorial`, `ferry say
//! --tutorial`. Its protocol has no framing: a file name goes out as is and
//! the file comes back until the server closes; a message goes out as is
//! and whatever comes back within a moment is the answer.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{connect, ClientError, Downloaded, GetOptions, HostPort, OutputDir};
use crate::connection::Connection;
use crate::display::escape_controls;

/// Downloads `name` from a tutorial-style server: sends the name exactly
/// (no terminator), saves everything until the server closes into `rel`
/// inside `out` through a `.part`, and fails, leaving nothing, if the
/// server sends nothing. The raw protocol has no sizes, times or hashes, so
/// nothing is verified and an existing file is replaced only with
/// `--force`.
///
/// # Errors
///
/// Connection errors, `Empty` when nothing arrives, `Local` for disk
/// errors, `Exists`, `Interrupted` (nothing kept: the raw protocol cannot
/// resume).
pub async fn get(
    addr: &HostPort,
    name: &str,
    out: &OutputDir,
    rel: &Path,
    opts: &GetOptions,
) -> Result<Downloaded, ClientError> {
    // No size or time to compare: anything already there is "different".
    out.existing(rel, u64::MAX, i64::MIN, opts.force)?;
    let part = out.part(rel);
    let mut stream = connect(addr).await?;
    stream
        .write_all(name.as_bytes())
        .await
        .map_err(|e| ClientError::Connection(e.into()))?;
    let mut conn = Connection::new(stream);
    let bar = opts.progress.bar(name, 0);
    let mut file = None;
    let mut failure = None;
    let mut buf = vec![0u8; 1024 * 1024];
    let read = conn.read_to_end(&mut buf, |chunk| {
        if file.is_none() {
            file = Some(part.create_plain().inspect_err(|e| {
                failure = Some(io::Error::new(e.kind(), e.to_string()));
            })?);
        }
        let f = file.as_mut().expect("just created");
        f.write_all(chunk).inspect_err(|e| {
            failure = Some(io::Error::new(e.kind(), e.to_string()));
        })?;
        bar.inc(chunk.len() as u64);
        Ok(())
    });
    let res = tokio::select! {
        r = read => Some(r),
        () = opts.cancel.cancelled() => None,
    };
    drop(bar);
    let local_err = |source| ClientError::Local {
        path: part.part_path(),
        source,
    };
    let Some(res) = res else {
        drop(file);
        part.discard();
        return Err(ClientError::Interrupted {
            part: None,
            kept: 0,
            total: 0,
        });
    };
    if let Some(e) = failure {
        drop(file);
        part.discard();
        return Err(local_err(e));
    }
    let size = match res {
        Ok(n) => n,
        Err(e) => {
            drop(file);
            part.discard();
            return Err(ClientError::Connection(e.into()));
        }
    };
    let Some(file) = file else {
        return Err(ClientError::Empty(escape_controls(name).into_owned()));
    };
    part.save(&file, None)?;
    Ok(Downloaded {
        path: part.target().to_path_buf(),
        size,
        resumed: 0,
        resumed_prefix: true,
        restarted: None,
    })
}

/// Once an answer has started, how long without more bytes ends it (the
/// tutorial's servers answer in one `send`, without a terminator).
const ANSWER_QUIET: Duration = Duration::from_millis(100);

/// A connection to a tutorial-style message server.
#[derive(Debug)]
pub struct TutorialSay {
    stream: TcpStream,
    wait: Duration,
    /// The server has closed (or reset) the connection: nothing more can
    /// be delivered.
    closed: bool,
}

/// The error for a message that cannot be sent because the server closed
/// the connection (the tutorial's first server answers once and closes).
///
/// Fix: this used to surface as the socket's raw `EPIPE`, which the binary
/// takes for a closed stdout pipe and exits 0 on, so the remaining lines
/// were dropped silently. The error kind here is deliberately not
/// `BrokenPipe`.
fn server_closed() -> ClientError {
    ClientError::Connection(
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the server closed the connection; message not sent",
        )
        .into(),
    )
}

impl TutorialSay {
    /// Connects; answers are awaited for up to `wait` after each message.
    ///
    /// # Errors
    ///
    /// Connection errors.
    pub async fn connect(addr: &HostPort, wait: Duration) -> Result<Self, ClientError> {
        Ok(TutorialSay {
            stream: connect(addr).await?,
            wait,
            closed: false,
        })
    }

    /// Sends `message` as is and returns whatever the server answers within
    /// the wait (empty if nothing: the tutorial's loop server never answers).
    ///
    /// # Errors
    ///
    /// Connection errors while sending, including a server that has closed
    /// the connection (noticed while waiting for an earlier answer).
    pub async fn say(&mut self, message: &[u8]) -> Result<Vec<u8>, ClientError> {
        if self.closed {
            return Err(server_closed());
        }
        self.stream.write_all(message).await.map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                server_closed()
            } else {
                ClientError::Connection(e.into())
            }
        })?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // Wait up to `wait` for the first bytes, then collect what follows
        // closely behind them.
        let mut limit = self.wait;
        while let Ok(read) = tokio::time::timeout(limit, self.stream.read(&mut buf)).await {
            match read {
                Ok(n) if n > 0 => answer.extend_from_slice(&buf[..n]),
                // End of stream or a reset: remember it, so a later
                // message fails instead of vanishing.
                _ => {
                    self.closed = true;
                    break;
                }
            }
            limit = ANSWER_QUIET;
        }
        Ok(answer)
    }
}
