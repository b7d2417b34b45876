//! Issue 9: what a hostile review found, each with a test that failed on
//! the code before the fix (checked by running this file against that
//! build with `FERRY_TEST_BIN`).
//!
//! Hostile clients: pipelining without reading (memory, slots), requests
//! for no bytes (hashing), FIFOs (opened as a side effect). Hostile servers:
//! terminal escapes and spoofing characters, endless listings, announced
//! but unsent bodies. A local attacker: symlinks planted in the output
//! directory.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ferry::protocol::{
    EntryKind, ErrorCode, FileHeader, Frame, GetRequest, ListEntry, StatReply, HASH_LEN,
    MAX_LIST_ENTRIES,
};

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

/// A directory whose listing is about 34 KiB: one 7-byte `List` request
/// makes the server queue that much.
fn wide_listing(root: &Path) {
    for i in 0..150 {
        write_file(root, &format!("{i:03}-{}", "n".repeat(196)), b"x");
    }
}

fn list_root() -> Vec<u8> {
    let mut v = Vec::new();
    Frame::List { path: Vec::new() }.encode(&mut v);
    v
}

/// A `Stat` of the root: 7 bytes in, 23 out, cheap for the server, and an
/// answer it does not send on its own while more requests are buffered
/// (it batches them).
fn stat_root() -> Vec<u8> {
    let mut v = Vec::new();
    Frame::Stat { path: Vec::new() }.encode(&mut v);
    v
}

/// Writes `requests` copies of `one` after the hello, `per_write` requests
/// per write, each write ending one byte into the next request (so the
/// server's read buffer is never empty after a request), never reading;
/// stops when the server stops taking bytes for 2 s, or after 10 s.
/// `pace` between writes keeps the client slower than the server, so each
/// read of the server's ends where a write did (one byte into a request).
/// Returns the bytes written.
fn pipeline_without_reading(
    s: &mut TcpStream,
    one: &[u8],
    requests: usize,
    per_write: usize,
    pace: Option<Duration>,
) -> usize {
    let mut stream = hello();
    for _ in 0..requests {
        stream.extend_from_slice(one);
    }
    s.set_nonblocking(true).unwrap();
    // Each request its own segment, at once (no Nagle wait for the ACK).
    s.set_nodelay(true).unwrap();
    let mut sent = 0;
    let mut blocked_since: Option<Instant> = None;
    let started = Instant::now();
    // The hello and first request, then one request per write.
    let mut cut = hello().len() + 1;
    while sent < stream.len() && started.elapsed() < Duration::from_secs(10) {
        let end = cut.min(stream.len());
        match s.write(&stream[sent..end]) {
            Ok(n) => {
                sent += n;
                blocked_since = None;
                if sent == end {
                    cut += one.len() * per_write;
                    if let Some(p) = pace {
                        thread::sleep(p);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(2) {
                    break;
                }
                thread::sleep(Duration::from_millis(1));
            }
            Err(_) => break,
        }
    }
    sent
}

#[test]
fn issue9_a_client_that_pipelines_and_never_reads_cannot_grow_server_memory() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "small.txt", b"small");
    // No log line per request (they would slow the server down to the
    // client's pace); only the connection's end, which the test waits for.
    let srv = Server::start_logging(
        root.path(),
        &["--idle-timeout", "5"],
        Some("warn,ferry::server::frontend::native=warn,ferry::server=debug"),
    );
    let before = srv.rss_kib().expect("server RSS");
    let mut hog = TcpStream::connect(srv.addr).unwrap();
    // 8,000,000 requests (56 MB) would make the server queue 184 MB of
    // answers; in 10 s at this pace, about a third of that.
    let sent = pipeline_without_reading(
        &mut hog,
        &stat_root(),
        8_000_000,
        128,
        Some(Duration::from_micros(200)),
    );
    // Give the server time to work through whatever it has read.
    thread::sleep(Duration::from_secs(2));
    let after = srv.rss_kib().expect("server RSS");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "server RSS grew by {grown} KiB ({before} -> {after}) for {sent} request bytes never read"
    );
    // Everyone else is still served.
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "small.txt", "-q"]).ok();
    // And the hog is dropped once it has taken nothing for the idle timeout.
    assert!(
        srv.wait_stderr(PATIENCE, "peer stopped reading"),
        "the server never dropped the client that does not read:\n{}",
        srv.stderr()
    );
    eprintln!(
        "FIGURE never-reading pipeliner: {sent} request bytes written, server RSS {before} -> {after} KiB"
    );
    drop(hog);
}

#[test]
fn issue9_a_client_that_never_reads_loses_its_slot_to_a_newcomer_and_to_the_timeout() {
    let root = tempfile::tempdir().unwrap();
    wide_listing(root.path());
    write_file(root.path(), "small.txt", b"small");
    let srv = Server::start(
        root.path(),
        &["--max-connections", "1", "--idle-timeout", "4"],
    );
    // The hog fills the only slot and its socket buffers, then sits.
    let mut hog = TcpStream::connect(srv.addr).unwrap();
    pipeline_without_reading(&mut hog, &list_root(), 2_000, 1, None);
    // Stalled for more than half the idle timeout: evictable.
    thread::sleep(Duration::from_millis(2500));
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "small.txt", "-o", "dl/"]).ok();
    assert_eq!(
        fs::read(out.path().join("dl/small.txt")).unwrap(),
        b"small",
        "{run}"
    );
    assert!(
        srv.wait_stderr(PATIENCE, "closed to make room"),
        "{}",
        srv.stderr()
    );
    drop(hog);

    // With nobody waiting, the stall limit drops a hog by itself.
    let mut hog = TcpStream::connect(srv.addr).unwrap();
    let t0 = Instant::now();
    pipeline_without_reading(&mut hog, &list_root(), 2_000, 1, None);
    let dropped = wait_until(PATIENCE, Duration::from_millis(50), || {
        srv.stderr().matches("peer stopped reading").count() >= 2
    });
    assert!(
        dropped,
        "the stalled writer was never dropped:\n{}",
        srv.stderr()
    );
    eprintln!(
        "FIGURE never-reading client with --max-connections 1: newcomer served after eviction; \
         a lone hog dropped {:?} after it connected (--idle-timeout 4)",
        t0.elapsed()
    );
}

/// Text a hostile server sends to reach the user's terminal: a window
/// title (OSC), clear screen, colour, a one-byte CSI (C1), a bidi override
/// and a zero-width space.
const EVIL: &str = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u{9b}31m \u{202e}exe.txt\u{200b}!";

/// Names that are legal file names but display deceptively.
const SPOOFED: [&str; 2] = ["invoice\u{202e}fdp.exe", "zero\u{200b}width"];

fn hostile_text_server(conns: usize) -> FakeServer {
    FakeServer::start(conns, |frame, s| {
        match frame {
            Frame::Get(g) if g.path.starts_with(b"missing") => {
                send_frames(s, &[Frame::error(ErrorCode::NotFound, EVIL)])?
            }
            Frame::Get(_) => {
                let body = b"ok";
                let mut out = Vec::new();
                Frame::FileHeader(FileHeader {
                    offset: 0,
                    length: 2,
                    size: 2,
                    mtime_ns: 0,
                })
                .encode(&mut out);
                out.extend_from_slice(body);
                Frame::Trailer {
                    hash: *blake3::hash(body).as_bytes(),
                }
                .encode(&mut out);
                s.write_all(&out)?;
            }
            Frame::Stat { .. } => send_frames(
                s,
                &[Frame::StatReply(StatReply {
                    kind: EntryKind::Dir,
                    size: 0,
                    mtime_ns: 0,
                    hash: None,
                })],
            )?,
            Frame::List { .. } => {
                let mut names: Vec<Vec<u8>> =
                    SPOOFED.iter().map(|n| n.as_bytes().to_vec()).collect();
                names.push(EVIL.as_bytes().to_vec());
                names.push("c1\u{9b}name".as_bytes().to_vec());
                let mut frames: Vec<Frame> = names
                    .into_iter()
                    .map(|name| {
                        Frame::ListEntry(ListEntry {
                            name,
                            kind: EntryKind::File,
                            size: 2,
                            mtime_ns: 0,
                        })
                    })
                    .collect();
                frames.push(Frame::ListEnd { count: 4 });
                send_frames(s, &frames)?;
            }
            Frame::Message { .. } => send_frames(
                s,
                &[Frame::Ack {
                    text: EVIL.as_bytes().to_vec(),
                }],
            )?,
            _ => return Ok(Flow::Close),
        }
        Ok(Flow::Continue)
    })
}

#[test]
fn issue9_escapes_and_spoofing_characters_from_a_hostile_server_never_reach_the_terminal() {
    let base = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<&str>, bool)> = vec![
        (
            "get (error message)",
            vec!["get", "HOST", "missing.txt"],
            false,
        ),
        (
            "get -o - (error message)",
            vec!["get", "HOST", "missing.txt", "-o", "-"],
            false,
        ),
        ("ls (names)", vec!["ls", "HOST"], true),
        ("say (acknowledgement)", vec!["say", "HOST", "hi"], true),
        (
            "get -r (names)",
            vec!["get", "-r", "HOST", ".", "-o", "tree"],
            true,
        ),
    ];
    let mut checked = Vec::new();
    for (label, args, check_stdout) in cases {
        let srv = hostile_text_server(1);
        let host = srv.host();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "HOST" { host.as_str() } else { a })
            .collect();
        let run = ferry(base.path(), &args);
        assert_terminal_safe(&run.stderr, &format_args!("{label}\n{run}"));
        if check_stdout {
            assert_terminal_safe(&run.stdout, &format_args!("{label}\n{run}"));
        }
        srv.join();
        checked.push((label, run));
    }
    let (_, tree) = checked.last().unwrap();
    // The deceptive but legal names are saved as they are (they are the
    // files' real names), shown escaped; the names with controls are
    // refused, each reported once.
    for name in SPOOFED {
        assert_eq!(
            fs::read(base.path().join("tree").join(name)).unwrap(),
            b"ok",
            "{tree}"
        );
    }
    assert!(tree.stderr.contains("skipped 2 (unsafe names)"), "{tree}");
    assert!(!tree.status.success(), "{tree}");
    let (_, ls) = &checked[2];
    assert!(ls.stdout.contains("zero\\u{200b}width"), "{ls}");
    assert!(ls.stdout.contains("invoice\\u{202e}fdp.exe"), "{ls}");
    let (_, get) = &checked[0];
    assert!(get.stderr.contains("\\u{1b}]0;pwned"), "{get}");
    eprintln!(
        "FIGURE hostile server text: OSC, CSI, C1, bidi and zero-width characters escaped in get, get -o -, ls, say, get -r"
    );
}

#[test]
fn issue9_symlinks_planted_in_the_output_directory_are_never_written_through() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(MIB as usize, 9);
    write_file(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let victim = out.path().join("victim.txt");
    fs::write(&victim, b"precious").unwrap();
    let dl = out.path().join("dl");
    fs::create_dir(&dl).unwrap();

    // At NAME.part.meta: replaced, never followed.
    std::os::unix::fs::symlink(&victim, dl.join("big.bin.part.meta")).unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).ok();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "{run}");
    assert!(fs::read(dl.join("big.bin")).unwrap() == data, "{run}");
    fs::remove_file(dl.join("big.bin")).unwrap();

    // At NAME.part: the download refuses to open it.
    std::os::unix::fs::symlink(&victim, dl.join("big.bin.part")).unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).fails();
    assert!(
        run.stderr.starts_with("ferry: ") && run.stderr.contains("big.bin.part"),
        "{run}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "{run}");
    fs::remove_file(dl.join("big.bin.part")).unwrap();

    // At the final name: refused without --force; with it, the link itself
    // is replaced.
    std::os::unix::fs::symlink(&victim, dl.join("big.bin")).unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).fails();
    assert!(run.stderr.contains("already exists"), "{run}");
    let run = ferry(
        out.path(),
        &["get", &srv.host(), "big.bin", "-o", "dl/", "--force"],
    )
    .ok();
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "{run}");
    let meta = fs::symlink_metadata(dl.join("big.bin")).unwrap();
    assert!(meta.is_file(), "{run}");
    assert!(fs::read(dl.join("big.bin")).unwrap() == data, "{run}");
}

/// A server that answers every GET with a header announcing `size` bytes,
/// then hangs up without sending one.
fn announcing_server(size: u64) -> FakeServer {
    FakeServer::start(1, move |frame, s| match frame {
        Frame::Get(_) => {
            send_frames(
                s,
                &[Frame::FileHeader(FileHeader {
                    offset: 0,
                    length: size,
                    size,
                    mtime_ns: 0,
                })],
            )?;
            Ok(Flow::Close)
        }
        _ => Ok(Flow::Close),
    })
}

#[test]
fn issue9_disk_is_not_reserved_for_bytes_a_server_only_announced() {
    use std::os::unix::fs::MetadataExt;
    let out = tempfile::tempdir().unwrap();
    let srv = announcing_server(8 << 30);
    let run = ferry(out.path(), &["get", &srv.host(), "huge.bin", "-o", "dl/"]).fails();
    srv.join();
    let part = out.path().join("dl/huge.bin.part");
    let allocated = fs::metadata(&part).map(|m| m.blocks() * 512).unwrap_or(0);
    assert!(
        allocated < MIB,
        "{allocated} bytes stay reserved for an 8 GiB body never sent\n{run}"
    );
    assert!(run.stderr.starts_with("ferry: "), "{run}");

    // More than the disk could ever hold: refused before anything is
    // reserved, with a line saying so.
    let srv = announcing_server(1 << 50);
    let run = ferry(out.path(), &["get", &srv.host(), "vast.bin", "-o", "dl/"]).fails();
    srv.join();
    assert!(run.stderr.contains("not enough space"), "{run}");
    eprintln!(
        "FIGURE announced 8 GiB, sent 0: {allocated} bytes left allocated; 1 PiB: {}",
        run.stderr.trim()
    );
}

#[test]
fn issue9_an_endless_listing_is_cut_off_and_costs_the_client_little_memory() {
    let written = Arc::new(AtomicU64::new(0));
    let counter = written.clone();
    let name = "n".repeat(250).into_bytes();
    let srv = FakeServer::start(1, move |frame, s| {
        let Frame::List { .. } = frame else {
            return Ok(Flow::Close);
        };
        // Up to 2,000,000 entries (about 560 MB), as long as the client reads.
        let mut batch = Vec::new();
        for _ in 0..2_000 {
            Frame::ListEntry(ListEntry {
                name: name.clone(),
                kind: EntryKind::File,
                size: 1,
                mtime_ns: 0,
            })
            .encode(&mut batch);
        }
        for _ in 0..1_000 {
            if s.write_all(&batch).is_err() {
                break;
            }
            counter.fetch_add(2_000, Ordering::SeqCst);
        }
        Ok(Flow::Close)
    });
    let base = tempfile::tempdir().unwrap();
    let child = ferry_spawn(base.path(), &["ls", &srv.host()]);
    let (run, peak_kib) = finish_measuring_rss(child, "ferry ls".into());
    srv.join();
    let sent = written.load(Ordering::SeqCst);
    let run = run.fails();
    assert!(
        run.stderr.contains(&MAX_LIST_ENTRIES.to_string()),
        "no clear error\n{}",
        run.stderr
    );
    assert!(
        sent < (MAX_LIST_ENTRIES + 200_000) as u64,
        "the client kept reading: the server wrote {sent} entries"
    );
    assert!(peak_kib < 64 * 1024, "ls peaked at {peak_kib} KiB");
    eprintln!(
        "FIGURE endless listing: client stopped after the server wrote {sent} entries; ls peak RSS {peak_kib} KiB"
    );
}

#[test]
fn issue9_a_request_for_no_bytes_never_makes_the_server_hash() {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("big.bin");
    fs::write(&path, random_bytes(64 * MIB as usize, 8)).unwrap();
    // Modified "in the future": a version never old enough to be cached,
    // so every hash of it would be a full read.
    let later = std::time::SystemTime::now() + Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let srv = Server::start(root.path(), &[]);
    let mut w = Wire::connect(srv.addr, PATIENCE);
    w.handshake();
    let before = bytes_read_by(srv.pid());
    const N: usize = 20;
    let mut reqs = Vec::new();
    for _ in 0..N {
        Frame::Get(GetRequest {
            path: b"big.bin".to_vec(),
            offset: 0,
            length: Some(0),
            if_unchanged: None,
        })
        .encode(&mut reqs);
    }
    w.send(&reqs);
    for _ in 0..N {
        match w.expect_frame("FileHeader") {
            Frame::FileHeader(h) => assert_eq!((h.length, h.size), (0, 64 * MIB)),
            other => panic!("{other:?}"),
        }
        match w.expect_frame("Trailer") {
            // Not known, and not computed for a request of no bytes.
            Frame::Trailer { hash } => assert_eq!(hash, [0; HASH_LEN]),
            other => panic!("{other:?}"),
        }
    }
    let read = bytes_read_by(srv.pid()) - before;
    assert!(
        read < 16 * MIB,
        "{N} requests for no bytes made the server read {read} bytes"
    );
    // A request with a body still gets the real hash.
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "big.bin", "-q"]).ok();
    eprintln!("FIGURE {N} GETs of 0 bytes of a 64 MiB file: the server read {read} bytes");
}

#[test]
fn issue9_a_fifo_is_never_opened_by_a_request() {
    let root = tempfile::tempdir().unwrap();
    let fifo = root.path().join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let srv = Server::start(root.path(), &[]);
    // A writer's open of a FIFO blocks until some reader opens it: if the
    // server opens it, this thread gets through.
    let opened = Arc::new(AtomicBool::new(false));
    let writer = {
        let (opened, fifo) = (opened.clone(), fifo.clone());
        thread::spawn(move || {
            let f = fs::OpenOptions::new().write(true).open(&fifo);
            opened.store(true, Ordering::SeqCst);
            drop(f);
        })
    };
    let mut w = Wire::connect(srv.addr, PATIENCE);
    w.handshake();
    let mut reqs = Vec::new();
    Frame::Get(GetRequest {
        path: b"fifo".to_vec(),
        offset: 0,
        length: None,
        if_unchanged: None,
    })
    .encode(&mut reqs);
    w.send(&reqs);
    match w.expect_frame("Error") {
        Frame::Error { code, .. } => assert_eq!(code, ErrorCode::NotAFile as u16),
        other => panic!("{other:?}"),
    }
    let mut raw = TcpStream::connect(srv.addr).unwrap();
    raw.write_all(b"fifo\n").unwrap();
    raw.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(got.is_empty());
    thread::sleep(Duration::from_millis(300));
    let server_opened_it = opened.load(Ordering::SeqCst);
    // Let the writer go: open the reading end ourselves.
    let _reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(&fifo)
        .unwrap();
    writer.join().unwrap();
    assert!(!server_opened_it, "the server opened the FIFO for reading");
}

use std::os::unix::fs::OpenOptionsExt;

#[test]
fn issue9_list_stat_and_get_agree_on_symlinks_inside_the_root() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "b/f.txt", b"bee");
    write_file(root.path(), "a/own.txt", b"own");
    let a = root.path().join("a");
    std::os::unix::fs::symlink("../b/f.txt", a.join("to_b_file")).unwrap();
    std::os::unix::fs::symlink("../b", a.join("to_b")).unwrap();
    std::os::unix::fs::symlink("..", a.join("up")).unwrap();
    std::os::unix::fs::symlink(".", a.join("self")).unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let ls = ferry(out.path(), &["ls", &srv.host(), "a"]).ok();
    let kind_of = |name: &str| {
        ls.stdout
            .lines()
            .find(|l| {
                l.trim_end()
                    .trim_end_matches('/')
                    .ends_with(&format!("  {name}"))
            })
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("{name} not listed\n{ls}"))
            .to_string()
    };
    assert_eq!(kind_of("to_b_file"), "file", "{ls}");
    assert_eq!(kind_of("to_b"), "dir", "{ls}");
    // Back to a directory on the way here: listed as a link, not followed.
    assert_eq!(kind_of("up"), "link", "{ls}");
    assert_eq!(kind_of("self"), "link", "{ls}");
    let tree = ferry(out.path(), &["get", "-r", &srv.host(), "a", "-o", "t"]).ok();
    assert_eq!(
        fs::read(out.path().join("t/a/to_b_file")).unwrap(),
        b"bee",
        "{tree}"
    );
    assert_eq!(
        fs::read(out.path().join("t/a/to_b/f.txt")).unwrap(),
        b"bee",
        "{tree}"
    );
    assert_eq!(
        files_under(&out.path().join("t")),
        ["a/own.txt", "a/to_b/f.txt", "a/to_b_file"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect::<Vec<_>>(),
        "{tree}"
    );
}

#[test]
fn issue9_no_hardlinks_refuses_files_with_other_names() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir_in(root.path().parent().unwrap()).unwrap();
    let secret = elsewhere.path().join("secret.txt");
    fs::write(&secret, b"outside").unwrap();
    fs::hard_link(&secret, root.path().join("linked.txt")).unwrap();
    write_file(root.path(), "plain.txt", b"plain");
    let out = tempfile::tempdir().unwrap();

    let srv = Server::start(root.path(), &["--no-hardlinks"]);
    let run = ferry(out.path(), &["get", &srv.host(), "linked.txt"]).fails();
    assert!(run.stderr.contains("hard-linked"), "{run}");
    ferry(out.path(), &["get", &srv.host(), "plain.txt"]).ok();
    drop(srv);
    // By default a hard link is served (a limit of path-based confinement,
    // docs/RELIABILITY.md).
    let srv = Server::start(root.path(), &[]);
    ferry(out.path(), &["get", &srv.host(), "linked.txt"]).ok();
}

#[test]
fn issue9_stat_of_a_directory_reports_size_zero() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "sub/x", b"x");
    let srv = Server::start(root.path(), &[]);
    let mut w = Wire::connect(srv.addr, PATIENCE);
    w.handshake();
    let mut reqs = Vec::new();
    Frame::Stat {
        path: b"sub".to_vec(),
    }
    .encode(&mut reqs);
    Frame::Stat { path: Vec::new() }.encode(&mut reqs);
    w.send(&reqs);
    for _ in 0..2 {
        match w.expect_frame("StatReply") {
            Frame::StatReply(s) => assert_eq!((s.kind, s.size), (EntryKind::Dir, 0)),
            other => panic!("{other:?}"),
        }
    }
}
