//! Issue 12, point 8: what can block — a huge directory's listing, a
//! stdout and a stderr nobody reads — never holds up another client's
//! small download. Both are shown by order and by liveness, not by a
//! timing: the figures are printed.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;

/// A small HTTP download with curl, bounded; its body.
fn small_download(host: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "30",
            &format!("http://{host}/small.txt"),
        ])
        .output()
        .expect("curl must be installed (the CI script installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Eight clients list a directory of 200,000 entries at once (more
/// listings than the server has workers: natively and as JSON over
/// HTTP); meanwhile small downloads one after another are each answered
/// in a small part of the listings' time. With readdir, the stats and the
/// rendering on the async workers, a download waited for whole listings.
///
/// Not a timing assertion on the machine's speed: the bound is relative
/// to the listings on the same machine in the same run (a quarter of
/// their span), so a slow or loaded machine slows both alike.
#[test]
fn listing_a_huge_directory_does_not_hold_up_a_small_download() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let big = root.join("big");
    fs::create_dir_all(&big).unwrap();
    for i in 0..200_000 {
        fs::File::create(big.join(format!("f{i:06}"))).unwrap();
    }
    write_file(&root, "small.txt", b"small\n");
    let srv = Server::start_logging(&root, &[], None);
    let host = srv.host();
    let started = Instant::now();
    let listings: Vec<_> = (0..8)
        .map(|i| {
            let host = host.clone();
            std::thread::spawn(move || {
                let out = if i % 2 == 0 {
                    Command::new(ferry_bin())
                        .args(["ls", &host, "big"])
                        .stderr(Stdio::null())
                        .output()
                        .unwrap()
                } else {
                    Command::new("curl")
                        .args([
                            "-sS",
                            "--max-time",
                            "300",
                            &format!("http://{host}/big/?format=json"),
                        ])
                        .output()
                        .unwrap()
                };
                let text = String::from_utf8_lossy(&out.stdout);
                let names = text.matches("f19999").count();
                (names, started.elapsed())
            })
        })
        .collect();
    // Let the listings reach the server first (not a measurement).
    std::thread::sleep(Duration::from_millis(300));
    let mut each = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(small_download(&host), "small\n");
        each.push(t.elapsed());
    }
    let mut last_listing = Duration::ZERO;
    for l in listings {
        let (names, done) = l.join().unwrap();
        // f199990..f199999: the end of the listing arrived.
        assert_eq!(names, 10, "a listing came back incomplete");
        last_listing = last_listing.max(done);
    }
    let slowest = each.iter().max().copied().unwrap_or_default();
    eprintln!(
        "FIGURE huge listing: 8 listings of 200,000 entries took {last_listing:?}; 5 small downloads meanwhile took {each:?}"
    );
    assert!(
        slowest < last_listing / 4,
        "a small download waited {slowest:?} while the listings took {last_listing:?}"
    );
}

/// `ferry serve` whose stdout and stderr are pipes nobody reads after
/// the startup line.
struct Stuck {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    _err: std::process::ChildStderr,
}

impl Drop for Stuck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Clients flood the tutorial's message mode while the server's stdout
/// (where messages are printed) and stderr (its debug log) are pipes
/// nobody reads: the flood stalls, and small downloads by other clients
/// are still served, over HTTP and natively.
#[test]
fn a_stdout_and_stderr_nobody_reads_do_not_stall_other_clients() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    write_file(&root, "small.txt", b"small\n");
    let mut child = Command::new(ferry_bin())
        .args([
            "serve",
            root.to_str().unwrap(),
            "--tutorial",
            "message",
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
        ])
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let err = child.stderr.take().unwrap();
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr = parse_addr(&first).unwrap_or_else(|| panic!("no address in {first:?}"));
    let mut srv = Stuck {
        child,
        out,
        _err: err,
    };
    let host = addr.to_string();

    // The flood: four clients (more than the server has workers), 8 MiB
    // of message text each, their acknowledgements drained.
    const FLOOD: u64 = 32 << 20;
    let sent = Arc::new(AtomicU64::new(0));
    for _ in 0..4 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut acks = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(acks.read(&mut buf), Ok(n) if n > 0) {}
        });
        let sent = sent.clone();
        std::thread::spawn(move || {
            let line = [b'm'; 4095];
            for _ in 0..(FLOOD / 4 / 4096) {
                if s.write_all(&line)
                    .and_then(|()| s.write_all(b"\n"))
                    .is_err()
                {
                    break;
                }
                sent.fetch_add(4096, Ordering::Relaxed);
            }
        });
    }
    // Wait (bounded) until the flood stops moving: stdout is full.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = sent.load(Ordering::Relaxed);
        assert!(
            now < FLOOD,
            "the whole flood went through: was stdout read?"
        );
        if now == last && now > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the flood never stalled");
        last = now;
    }
    // Everyone else is still served.
    let t = Instant::now();
    for _ in 0..10 {
        assert_eq!(small_download(&host), "small\n");
    }
    let got = ferry(tmp.path(), &["get", &host, "small.txt", "-o", "copy.txt"]).ok();
    assert_eq!(
        fs::read(tmp.path().join("copy.txt")).unwrap(),
        b"small\n",
        "{got}"
    );
    let stalled_at = sent.load(Ordering::Relaxed);
    assert!(stalled_at < FLOOD);
    // What stalled was the printing of messages: stdout holds them.
    // (After the startup's address lines.)
    let mut printed = String::new();
    for _ in 0..10 {
        printed.clear();
        srv.out.read_line(&mut printed).unwrap();
        if !printed.starts_with("  ") && !printed.trim().is_empty() {
            break;
        }
    }
    assert!(
        printed.starts_with("message from 127.0.0.1:"),
        "{printed:.80}"
    );
    eprintln!(
        "FIGURE stuck stdout: the flood stalled after {stalled_at} bytes; 10 HTTP and 1 native download served meanwhile in {:?}",
        t.elapsed()
    );
}
