//! Received messages printed to stdout without ever blocking a worker.
//!
//! A `write` to a stdout nobody reads (a full pipe, a stopped terminal)
//! blocks. So connections never write stdout themselves: they hand each
//! line to one printing thread through a bounded queue. When the queue is
//! full, only the connections that sent messages wait (their
//! acknowledgements come later); every other connection, and every worker,
//! goes on. No line is dropped.

use std::io::Write;
use std::time::Duration;

use tokio::sync::mpsc;

/// Lines waiting for stdout before senders wait (a line is at most one
/// read of 64 KiB, escaped: the queue holds a few MiB at worst).
const QUEUE: usize = 64;

/// The sending side of the printing thread.
#[derive(Debug)]
pub(crate) struct Printer {
    tx: mpsc::Sender<String>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Printer {
    /// Starts the printing thread.
    pub(crate) fn start() -> std::io::Result<Printer> {
        let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("ferry-stdout".into())
            .spawn(move || {
                while let Some(line) = rx.blocking_recv() {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                let _ = done_tx.send(());
            })?;
        Ok(Printer { tx, done })
    }

    /// Queues one line; waits (this task only) while the queue is full.
    pub(crate) async fn print(&self, line: String) {
        let _ = self.tx.send(line).await;
    }

    /// Lets the queued lines out, waiting at most `wait` (stdout may be
    /// stuck for good).
    pub(crate) async fn finish(self, wait: Duration) {
        drop(self.tx);
        let _ = tokio::time::timeout(wait, self.done).await;
    }
}
