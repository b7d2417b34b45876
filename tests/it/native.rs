//! The native protocol end to end: the real `ferry` binary on real loopback
//! sockets, driven by `ferry get/ls/say` and, where a test needs a client
//! that misbehaves on purpose (never reads, goes silent, pipelines), by raw
//! `std::net` sockets speaking frames built with the library's codec.
//!
//! Every wait is bounded: sockets carry read timeouts, loops carry deadlines
//! and iteration caps, and client commands are killed after 120 s by
//! `support::finish`. No test asserts how long anything took.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ferry::protocol::{ErrorCode, FileHeader, Frame, GetRequest};

use crate::support::*;

/// Upper bound for anything a test waits for; generous so that a slow CI
/// machine never flakes, small enough that a hang fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Helpers

/// Writes `data` to `root/rel`, creating parent directories.
fn put(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, data).unwrap();
    p
}

/// Asserts that no file at all (no download, no `.part`, no `.part.meta`)
/// exists under `dir`.
fn assert_nothing_written(dir: &Path, context: &dyn std::fmt::Display) {
    let files = files_under(dir);
    assert!(files.is_empty(), "files were written: {files:?}\n{context}");
}

fn get_frame(path: &str) -> Frame {
    Frame::Get(GetRequest {
        path: path.as_bytes().to_vec(),
        offset: 0,
        length: None,
        if_unchanged: None,
    })
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in frames {
        f.encode(&mut v);
    }
    v
}

/// A port on 127.0.0.1 where nothing listens (bound, noted, released).
fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn error_code(frame: &Frame) -> Option<u16> {
    match frame {
        Frame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A one-connection TCP proxy that forwards both ways but cuts the
/// connection (closes both sides) once `cut_after` bytes have gone from
/// server to client: a network failure in the middle of a body.
struct CutProxy {
    addr: SocketAddr,
    thread: Option<JoinHandle<u64>>,
}

impl CutProxy {
    fn start(upstream: SocketAddr, cut_after: u64) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let thread = thread::spawn(move || {
            // Accept one client, bounded in time.
            let deadline = Instant::now() + PATIENCE;
            let client = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e)
                        if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                    {
                        thread::sleep(Duration::from_millis(10));
                    }
                    Err(_) => return 0,
                }
            };
            client.set_nonblocking(false).unwrap();
            let server = TcpStream::connect_timeout(&upstream, PATIENCE).unwrap();
            for s in [&client, &server] {
                s.set_read_timeout(Some(PATIENCE)).unwrap();
                s.set_write_timeout(Some(PATIENCE)).unwrap();
            }
            // Client → server, unrestricted, until either side closes.
            let mut c_in = client.try_clone().unwrap();
            let mut s_out = server.try_clone().unwrap();
            let upward = thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
            // Server → client, up to the cut.
            let (mut s_in, mut c_out) = (&server, &client);
            let mut forwarded = 0u64;
            let mut buf = [0u8; 16 * 1024];
            while forwarded < cut_after {
                let want = buf
                    .len()
                    .min(usize::try_from(cut_after - forwarded).unwrap());
                match s_in.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        forwarded += n as u64;
                    }
                }
            }
            // The cut: both connections end here, mid-body.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            let _ = upward.join();
            forwarded
        });
        CutProxy {
            addr,
            thread: Some(thread),
        }
    }

    fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for the proxy to finish; returns the bytes it let through.
    fn join(mut self) -> u64 {
        self.thread.take().unwrap().join().expect("proxy thread")
    }
}

/// Bytes the server sends before the first body byte of a GET on a fresh
/// connection: its magic, `Welcome` (4 + 11) and `FileHeader` (4 + 33).
const PREAMBLE: u64 = 8 + 15 + 37;

/// Runs `ferry get` through a proxy that cuts after `cut_after` bytes and
/// checks the attempt failed, left a `.part` holding a prefix of `data`,
/// and nothing under the final name. Returns the part's length.
fn interrupted_get(srv: &Server, out: &Path, name: &str, data: &[u8], cut_after: u64) -> u64 {
    let proxy = CutProxy::start(srv.addr, cut_after);
    let run = ferry(out, &["get", &proxy.host(), name, "-o", "dl/"]).fails();
    let forwarded = proxy.join();
    assert_eq!(
        forwarded, cut_after,
        "the proxy let the whole cut through\n{run}"
    );
    let dl = out.join("dl");
    assert!(
        !dl.join(name).exists(),
        "final name exists after a cut transfer\n{run}"
    );
    let part = fs::read(dl.join(format!("{name}.part"))).expect(".part kept after a cut");
    assert!(dl.join(format!("{name}.part.meta")).exists(), "{run}");
    assert!(
        !part.is_empty() && part.len() < data.len(),
        "part of {} bytes\n{run}",
        part.len()
    );
    assert!(
        part.len() as u64 <= cut_after - PREAMBLE,
        "part holds more than the server sent"
    );
    assert_eq!(
        part[..],
        data[..part.len()],
        "the part is not a prefix of the file"
    );
    part.len() as u64
}

// ---------------------------------------------------------------------------
// Downloads

#[test]
fn get_empty_small_large_nested_and_unicode_names_byte_identical() {
    let root = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("small.txt", b"hello, ferry\n".to_vec()),
        ("big.bin", random_bytes(4 * MIB + 321, 11)),
        ("deep/er/nested.bin", random_bytes(70_000, 12)),
        (
            "with space 中文 名字.txt",
            "内容 content\n".as_bytes().to_vec(),
        ),
    ];
    for (rel, data) in &files {
        put(root.path(), rel, data);
    }
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    for (rel, data) in &files {
        let run = ferry(out.path(), &["get", &srv.host(), rel, "-o", "dl/"]).ok();
        let base = rel.rsplit('/').next().unwrap();
        let got = fs::read(out.path().join("dl").join(base)).unwrap();
        assert!(got == *data, "{rel}: content differs\n{run}");
        assert!(run.stderr.contains("verified"), "{run}");
    }
    // Nothing but the downloads: no leftover parts or metadata.
    let mut want: Vec<PathBuf> = files
        .iter()
        .map(|(rel, _)| PathBuf::from(rel.rsplit('/').next().unwrap()))
        .collect();
    want.sort();
    assert_eq!(files_under(&out.path().join("dl")), want);
}

#[test]
fn get_several_paths_in_one_command() {
    let root = tempfile::tempdir().unwrap();
    let a = random_bytes(300_000, 21);
    let b = random_bytes(5, 22);
    let c = Vec::new();
    put(root.path(), "a.bin", &a);
    put(root.path(), "sub/b.bin", &b);
    put(root.path(), "c.bin", &c);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(
        out.path(),
        &[
            "get",
            &srv.host(),
            "a.bin",
            "sub/b.bin",
            "c.bin",
            "-o",
            "dl",
        ],
    )
    .ok();
    for (name, data) in [("a.bin", &a), ("b.bin", &b), ("c.bin", &c)] {
        assert!(
            fs::read(out.path().join("dl").join(name)).unwrap() == *data,
            "{name}\n{run}"
        );
    }
    assert_eq!(run.stderr.matches("saved ").count(), 3, "{run}");
}

#[test]
fn get_quiet_prints_nothing_on_success() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "q.txt", b"quiet");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "q.txt", "-q"]).ok();
    assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run}");
    assert_eq!(fs::read(out.path().join("q.txt")).unwrap(), b"quiet");
}

#[test]
fn sixteen_concurrent_clients_each_get_correct_bytes() {
    const CLIENTS: usize = 16;
    let root = tempfile::tempdir().unwrap();
    let shared = random_bytes(2 * MIB + 7, 31);
    put(root.path(), "shared.bin", &shared);
    let own: Vec<Vec<u8>> = (0..CLIENTS)
        .map(|i| random_bytes(10_000 + i * 4099, 100 + i as u64))
        .collect();
    for (i, data) in own.iter().enumerate() {
        put(root.path(), &format!("own/{i}.bin"), data);
    }
    let srv = Server::start(root.path(), &[]);
    let host = srv.host();
    let out = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (host, dir) = (host.clone(), out.path().join(format!("c{i}")));
            fs::create_dir_all(&dir).unwrap();
            thread::spawn(move || {
                let own_path = format!("own/{i}.bin");
                ferry(&dir, &["get", &host, "shared.bin", &own_path, "-q"])
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let run = h.join().expect("client thread").ok();
        let dir = out.path().join(format!("c{i}"));
        assert!(
            fs::read(dir.join("shared.bin")).unwrap() == shared,
            "client {i}\n{run}"
        );
        assert!(
            fs::read(dir.join(format!("{i}.bin"))).unwrap() == own[i],
            "client {i}\n{run}"
        );
    }
}

// ---------------------------------------------------------------------------
// Resume

#[test]
fn interrupted_download_keeps_part_and_rerun_resumes_to_identical_bytes() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(4 * MIB + 4321, 41);
    put(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();

    let have = interrupted_get(&srv, out.path(), "big.bin", &data, MIB as u64);

    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).ok();
    assert!(run.stderr.contains(&format!("resumed at {have}")), "{run}");
    let dl = out.path().join("dl");
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == data,
        "resumed file differs\n{run}"
    );
    assert_eq!(
        files_under(&dl),
        vec![PathBuf::from("big.bin")],
        "leftovers\n{run}"
    );
    // The server was asked for the rest only.
    assert!(
        srv.wait_stderr(PATIENCE, &format!("offset={have}")),
        "server log shows no GET from offset {have}:\n{}",
        srv.stderr()
    );
}

#[test]
fn file_changed_between_attempts_is_downloaded_whole_again() {
    let root = tempfile::tempdir().unwrap();
    let old = random_bytes(4 * MIB, 51);
    let path = put(root.path(), "moving.bin", &old);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();

    interrupted_get(&srv, out.path(), "moving.bin", &old, MIB as u64);

    // Rewritten with different content and size: the part is worthless.
    let new = random_bytes(3 * MIB + 99, 52);
    fs::write(&path, &new).unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "moving.bin", "-o", "dl/"]).ok();
    assert!(
        !run.stderr.contains("resumed at"),
        "claimed to resume a changed file\n{run}"
    );
    let dl = out.path().join("dl");
    assert!(
        fs::read(dl.join("moving.bin")).unwrap() == new,
        "stale bytes\n{run}"
    );
    assert_eq!(
        files_under(&dl),
        vec![PathBuf::from("moving.bin")],
        "leftovers\n{run}"
    );
}

#[test]
fn file_rewritten_in_place_with_same_size_and_mtime_is_caught_by_the_hash() {
    // The validator (size, mtime) cannot see this change; the BLAKE3 check
    // must, and the client must then start over and end with the new bytes.
    let root = tempfile::tempdir().unwrap();
    let old = random_bytes(4 * MIB, 61);
    let path = put(root.path(), "sneaky.bin", &old);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();

    interrupted_get(&srv, out.path(), "sneaky.bin", &old, MIB as u64);

    // Same inode, same size, mtime put back: only the bytes differ. (The
    // pause only makes sure the rewrite's ctime differs on file systems
    // with a coarse clock; nothing is timed.)
    thread::sleep(Duration::from_millis(50));
    let new = random_bytes(4 * MIB, 62);
    {
        let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(&new).unwrap();
        f.set_modified(mtime).unwrap();
    }
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let run = ferry(out.path(), &["get", &srv.host(), "sneaky.bin", "-o", "dl/"]).ok();
    let dl = out.path().join("dl");
    assert!(
        fs::read(dl.join("sneaky.bin")).unwrap() == new,
        "wrong bytes\n{run}"
    );
    assert_eq!(
        files_under(&dl),
        vec![PathBuf::from("sneaky.bin")],
        "leftovers\n{run}"
    );
}

// ---------------------------------------------------------------------------
// Path safety

/// A served root `base/root` beside a directory `base/outside` holding a
/// secret, with symlinks of every kind planted in the root.
struct Fixture {
    _base: tempfile::TempDir,
    root: PathBuf,
}

const SECRET: &[u8] = b"TOP SECRET: outside the root\n";

fn traversal_fixture() -> Fixture {
    let base = tempfile::tempdir().unwrap();
    let root = base.path().join("root");
    put(&base.path().join("outside"), "secret.txt", SECRET);
    put(&root, "x", b"x at the root\n");
    put(&root, "a/inside.txt", b"inside\n");
    put(&root, "a/b", b"a/b\n");
    // Leaving the root: absolute, relative, via a parent dir, via a chain.
    symlink("/etc/passwd", root.join("etc_passwd")).unwrap();
    symlink(
        base.path().join("outside/secret.txt"),
        root.join("abs_secret"),
    )
    .unwrap();
    symlink("../outside/secret.txt", root.join("rel_secret")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("../..", root.join("a/upup")).unwrap();
    symlink("hop2", root.join("hop1")).unwrap();
    symlink("a/hop3", root.join("hop2")).unwrap();
    symlink("../../outside/secret.txt", root.join("a/hop3")).unwrap();
    // Staying inside: followed.
    symlink("a/inside.txt", root.join("good_link")).unwrap();
    symlink("a", root.join("good_dir")).unwrap();
    symlink("../x", root.join("a/back_to_x")).unwrap();
    Fixture { _base: base, root }
}

/// Every spelling we know of for "a file outside the root".
const HOSTILE: &[&str] = &[
    "..",
    "../x",
    "../outside/secret.txt",
    "a/../../b",
    "a/../x",
    "/etc/passwd",
    "//etc/passwd",
    "a//b",
    "./x",
    "a/./b",
    "x/",
    "..\\..\\x",
    "a\\..\\..\\x",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e",
    "..%2f..%2fetc%2fpasswd",
    "etc_passwd",
    "abs_secret",
    "rel_secret",
    "up",
    "up/outside/secret.txt",
    "up/root/x/../../outside/secret.txt",
    "a/upup/outside/secret.txt",
    "hop1",
    "hop2",
    "a/hop3",
];

#[test]
fn traversal_spellings_are_refused_and_nothing_is_written() {
    let fx = traversal_fixture();
    let srv = Server::start(&fx.root, &[]);
    for &hostile in HOSTILE {
        let out = tempfile::tempdir().unwrap();
        let run = ferry(out.path(), &["get", &srv.host(), hostile, "-o", "dl/"]).fails();
        assert!(run.stderr.starts_with("ferry: "), "{run}");
        assert!(
            !run.stderr.contains("TOP SECRET") && !run.stdout.contains("TOP SECRET"),
            "{run}"
        );
        assert_nothing_written(out.path(), &run);
    }
    // The server is still there and still serves.
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "x", "-q"]).ok();
    assert_eq!(fs::read(out.path().join("x")).unwrap(), b"x at the root\n");
}

#[test]
fn server_refuses_traversal_even_from_a_client_that_does_not_check() {
    // `ferry get` rejects some spellings before asking; a hostile client
    // would not. Send each as a Get frame on one connection: every answer
    // is one Error frame with a request-level code, never a FileHeader.
    let fx = traversal_fixture();
    let srv = Server::start(&fx.root, &[]);
    let mut conn = Wire::connect(srv.addr, PATIENCE);
    conn.handshake();
    let frames: Vec<Frame> = HOSTILE.iter().map(|p| get_frame(p)).collect();
    conn.send(&encode(&frames));
    for &hostile in HOSTILE {
        match conn.expect_frame(hostile) {
            Frame::Error { code, message } => {
                let code = ErrorCode::try_from(code).expect("known code");
                assert!(
                    matches!(
                        code,
                        ErrorCode::InvalidPath
                            | ErrorCode::OutsideRoot
                            | ErrorCode::NotFound
                            | ErrorCode::IsADirectory
                    ),
                    "{hostile:?}: {code:?} {message}"
                );
                assert!(!code.is_fatal());
            }
            other => panic!("{hostile:?} was answered with {other:?}"),
        }
    }
    // Stat and List of the same spellings leak nothing either.
    for &hostile in HOSTILE {
        for frame in [
            Frame::Stat {
                path: hostile.as_bytes().to_vec(),
            },
            Frame::List {
                path: hostile.as_bytes().to_vec(),
            },
        ] {
            conn.send(&encode(std::slice::from_ref(&frame)));
            let answer = conn.expect_frame(hostile);
            match (&frame, &answer) {
                (_, Frame::Error { code, .. }) => assert!(*code < 100, "{hostile:?}: {answer:?}"),
                // `up/root/...` and the like are not reachable, but a Stat of
                // an in-root symlink itself may describe it as a Symlink.
                (Frame::Stat { .. }, Frame::StatReply(r)) => {
                    assert_eq!(
                        r.kind,
                        ferry::protocol::EntryKind::Symlink,
                        "{hostile:?}: {r:?}"
                    )
                }
                _ => panic!("{frame:?} answered with {answer:?}"),
            }
        }
    }
    // Still usable afterwards: the connection was never dropped.
    conn.send(&encode(&[get_frame("x")]));
    let Frame::FileHeader(FileHeader { length, .. }) = conn.expect_frame("FileHeader") else {
        panic!("expected FileHeader");
    };
    assert_eq!(
        conn.read_body(length as usize)
            .expect("server closed inside a body"),
        b"x at the root\n"
    );
    assert!(matches!(
        conn.expect_frame("Trailer"),
        Frame::Trailer { .. }
    ));
}

#[test]
fn symlinks_that_stay_inside_the_root_are_followed() {
    let fx = traversal_fixture();
    let srv = Server::start(&fx.root, &[]);
    let out = tempfile::tempdir().unwrap();
    for (remote, local, want) in [
        ("good_link", "good_link", &b"inside\n"[..]),
        ("good_dir/inside.txt", "inside.txt", b"inside\n"),
        ("a/back_to_x", "back_to_x", b"x at the root\n"),
    ] {
        let run = ferry(out.path(), &["get", &srv.host(), remote, "-o", "dl/"]).ok();
        assert_eq!(
            fs::read(out.path().join("dl").join(local)).unwrap(),
            want,
            "{run}"
        );
    }
    let ls = ferry(out.path(), &["ls", &srv.host(), "good_dir"]).ok();
    assert!(ls.stdout.contains("inside.txt"), "{ls}");
}

#[test]
fn ls_refuses_directories_outside_the_root() {
    let fx = traversal_fixture();
    let srv = Server::start(&fx.root, &[]);
    let out = tempfile::tempdir().unwrap();
    for hostile in [
        "..",
        "up",
        "/etc",
        "//etc",
        "../outside",
        "a/upup",
        "a/upup/outside",
    ] {
        let run = ferry(out.path(), &["ls", &srv.host(), hostile]).fails();
        assert!(
            !run.stdout.contains("secret.txt") && !run.stdout.contains("passwd"),
            "{run}"
        );
    }
    // The root listing shows escaping links as links, not as their targets.
    let ls = ferry(out.path(), &["ls", &srv.host()]).ok();
    // `ls HOST /` is the served root (trailing `/`s are dropped), never `/`.
    for slashes in ["/", "//"] {
        let run = ferry(out.path(), &["ls", &srv.host(), slashes]).ok();
        assert_eq!(run.stdout, ls.stdout, "{run}");
    }
    let line = ls
        .stdout
        .lines()
        .find(|l| l.ends_with(" abs_secret"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(line.starts_with("link"), "{ls}");
    // ...and without the target's size.
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{ls}");
}

// ---------------------------------------------------------------------------
// Errors

#[test]
fn missing_file_reports_no_such_file_and_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "x", "-o", "dl/"]).fails();
    assert!(run.stderr.contains("no such file: x"), "{run}");
    assert_nothing_written(out.path(), &run);
}

#[test]
fn directory_as_file_is_refused_with_a_message_naming_it() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "sub/inner.txt", b"in");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "sub", "-o", "dl/"]).fails();
    assert!(run.stderr.contains("directory"), "{run}");
    assert_nothing_written(out.path(), &run);
}

#[test]
fn one_failing_path_does_not_stop_the_others_but_fails_the_command() {
    let root = tempfile::tempdir().unwrap();
    let a = random_bytes(100_000, 71);
    let c = random_bytes(200_000, 72);
    put(root.path(), "a.bin", &a);
    put(root.path(), "c.bin", &c);
    put(root.path(), "dir/f", b"f");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(
        out.path(),
        &[
            "get",
            &srv.host(),
            "a.bin",
            "missing.bin",
            "dir",
            "../c.bin",
            "c.bin",
            "-o",
            "dl",
        ],
    )
    .fails();
    assert!(run.stderr.contains("no such file: missing.bin"), "{run}");
    let dl = out.path().join("dl");
    assert!(fs::read(dl.join("a.bin")).unwrap() == a, "{run}");
    assert!(fs::read(dl.join("c.bin")).unwrap() == c, "{run}");
    assert_eq!(
        files_under(&dl),
        vec![PathBuf::from("a.bin"), PathBuf::from("c.bin")],
        "{run}"
    );
}

#[test]
fn connection_refused_names_the_address() {
    let port = dead_port();
    let host = format!("127.0.0.1:{port}");
    let out = tempfile::tempdir().unwrap();
    for args in [
        vec!["get", host.as_str(), "x", "-o", "dl/"],
        vec!["ls", host.as_str()],
        vec!["say", host.as_str(), "hi"],
    ] {
        let run = ferry(out.path(), &args).fails();
        assert!(
            run.stderr.contains(&format!("connection refused: {host}")),
            "{run}"
        );
    }
    assert_nothing_written(out.path(), &"after refused connections");
}

// ---------------------------------------------------------------------------
// Connection limit

#[test]
fn busy_server_refuses_a_new_client_while_its_only_slot_transfers() {
    let root = tempfile::tempdir().unwrap();
    huge_sparse(root.path(), "huge.bin");
    put(root.path(), "small.txt", b"small");
    let srv = Server::start(root.path(), &["--max-connections", "1"]);
    let holder = stalled_download(&srv, "huge.bin", PATIENCE);

    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "small.txt", "-o", "dl/"]).fails();
    assert!(run.stderr.contains("server busy"), "{run}");
    assert_nothing_written(out.path(), &run);

    // Once the holder leaves, the slot frees up (bounded retries: the server
    // notices the closed socket on its next write).
    drop(holder);
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    for _ in 0..300 {
        let run = ferry(out.path(), &["get", &srv.host(), "small.txt", "-o", "dl/"]);
        if run.status.success() {
            last = None;
            break;
        }
        assert!(run.stderr.contains("server busy"), "{run}");
        last = Some(run);
        if Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    if let Some(run) = last {
        panic!("server stayed busy after the holder left:\n{run}");
    }
    assert_eq!(fs::read(out.path().join("dl/small.txt")).unwrap(), b"small");
}

#[test]
fn idle_connection_is_evicted_to_make_room_for_a_real_client() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "small.txt", b"small");
    let srv = Server::start(root.path(), &["--max-connections", "1"]);
    let mut idle = Wire::connect(srv.addr, PATIENCE);
    // Make sure the server has taken the idle connection into its only slot
    // before the real client arrives (its log names the peer).
    let peer = idle.local_addr().to_string();
    assert!(
        srv.wait_stderr(PATIENCE, &peer),
        "server never logged {peer}:\n{}",
        srv.stderr()
    );

    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "small.txt", "-o", "dl/"]).ok();
    assert_eq!(
        fs::read(out.path().join("dl/small.txt")).unwrap(),
        b"small",
        "{run}"
    );

    // The idle connection was closed (it sent nothing, so no protocol is
    // known and no error frame is owed: just the close).
    let (frames, _how) = idle.frames_until_closed();
    assert!(frames.is_empty(), "{frames:?}");
}

#[test]
fn idle_native_connection_is_evicted_with_a_timeout_error() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "small.txt", b"small");
    let srv = Server::start(root.path(), &["--max-connections", "1"]);
    let mut idle = Wire::connect(srv.addr, PATIENCE);
    idle.handshake();

    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "small.txt", "-q"]).ok();

    let (frames, _how) = idle.frames_until_closed();
    let codes: Vec<_> = frames.iter().filter_map(error_code).collect();
    assert_eq!(codes, vec![ErrorCode::Timeout as u16], "{frames:?}");
}

// ---------------------------------------------------------------------------
// ls and say

#[test]
fn ls_lists_names_sorted_with_directory_marker() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "b.txt", b"12345");
    put(root.path(), "a.txt", b"");
    put(root.path(), "sub/inner.bin", &[0u8; 1234]);
    put(root.path(), "sub/deeper/x", b"x");
    put(root.path(), "名字 with space.txt", b"zh");
    let srv = Server::start(root.path(), &[]);
    let cwd = tempfile::tempdir().unwrap();

    let ls = ferry(cwd.path(), &["ls", &srv.host()]).ok();
    let lines: Vec<&str> = ls.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{ls}");
    let names: Vec<&str> = lines
        .iter()
        .map(|l| {
            l.split_once("Z  ")
                .map(|(_, n)| n)
                .unwrap_or_else(|| panic!("{ls}"))
        })
        .collect();
    assert_eq!(
        names,
        ["a.txt", "b.txt", "sub/", "名字 with space.txt"],
        "{ls}"
    );
    assert!(
        lines[1].starts_with("file") && lines[1].contains(" 5 "),
        "{ls}"
    );
    assert!(lines[2].starts_with("dir"), "{ls}");

    let sub = ferry(cwd.path(), &["ls", &srv.host(), "sub"]).ok();
    let sub_lines: Vec<&str> = sub.stdout.lines().collect();
    assert_eq!(sub_lines.len(), 2, "{sub}");
    assert!(
        sub_lines[0].starts_with("dir") && sub_lines[0].ends_with("  deeper/"),
        "{sub}"
    );
    assert!(
        sub_lines[1].contains(" 1234 ") && sub_lines[1].ends_with("  inner.bin"),
        "{sub}"
    );

    let slash = ferry(cwd.path(), &["ls", &srv.host(), "sub/"]).ok();
    assert_eq!(slash.stdout, sub.stdout);

    let missing = ferry(cwd.path(), &["ls", &srv.host(), "nope"]).fails();
    assert!(missing.stderr.contains("no such file: nope"), "{missing}");
}

#[test]
fn say_with_an_argument_is_acknowledged_and_printed_by_the_server() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let cwd = tempfile::tempdir().unwrap();
    let run = ferry(cwd.path(), &["say", &srv.host(), "hello from the test"]).ok();
    assert_eq!(run.stdout, "已收到你的信息\n", "{run}");
    assert!(
        srv.wait_stdout(PATIENCE, |l| l.starts_with("message from 127.0.0.1:")
            && l.ends_with(": hello from the test")),
        "server stdout: {:?}",
        srv.stdout_lines()
    );
}

#[test]
fn say_reads_lines_from_stdin_and_each_is_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &[]);
    let cwd = tempfile::tempdir().unwrap();
    let input = "first line\n第二行\nthird\n";
    let run = ferry_with_stdin(cwd.path(), &["say", &srv.host()], Some(input.as_bytes())).ok();
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        ["已收到你的信息"; 3],
        "{run}"
    );
    for msg in ["first line", "第二行", "third"] {
        assert!(
            srv.wait_stdout(PATIENCE, |l| l.ends_with(&format!(": {msg}"))),
            "no {msg:?} in server stdout: {:?}",
            srv.stdout_lines()
        );
    }
    // In order.
    let lines = srv.stdout_lines();
    let pos = |m: &str| {
        lines
            .iter()
            .position(|l| l.ends_with(&format!(": {m}")))
            .unwrap()
    };
    assert!(
        pos("first line") < pos("第二行") && pos("第二行") < pos("third"),
        "{lines:?}"
    );
}

// ---------------------------------------------------------------------------
// IPv6, timeouts, shutdown, pipelining

#[test]
fn ipv6_loopback_download() {
    if let Err(e) = TcpListener::bind("[::1]:0") {
        eprintln!("skipping ipv6_loopback_download: cannot bind [::1]: {e}");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(500_000, 81);
    put(root.path(), "v6.bin", &data);
    let srv = Server::start_on(root.path(), "::1", &[]);
    assert!(srv.addr.is_ipv6(), "{}", srv.addr);
    let host = format!("[::1]:{}", srv.addr.port());
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &host, "v6.bin", "-o", "dl/"]).ok();
    assert!(
        fs::read(out.path().join("dl/v6.bin")).unwrap() == data,
        "{run}"
    );
    let ls = ferry(out.path(), &["ls", &host]).ok();
    assert!(ls.stdout.contains("v6.bin"), "{ls}");
}

#[test]
fn silent_connection_after_hello_is_closed_by_the_idle_timeout() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &["--idle-timeout", "1"]);
    let mut conn = Wire::connect(srv.addr, PATIENCE);
    conn.handshake();
    // Now say nothing. The server must give up on its own, well within
    // PATIENCE (the read timeout would panic otherwise).
    let (frames, _how) = conn.frames_until_closed();
    let codes: Vec<_> = frames.iter().filter_map(error_code).collect();
    assert_eq!(codes, vec![ErrorCode::Timeout as u16], "{frames:?}");
}

#[test]
fn connection_that_sends_nothing_is_closed_by_the_idle_timeout() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &["--idle-timeout", "1"]);
    let mut conn = Wire::connect(srv.addr, PATIENCE);
    let (frames, _how) = conn.frames_until_closed();
    assert!(frames.is_empty(), "{frames:?}");
}

#[test]
fn sigterm_exits_zero_and_tells_idle_clients() {
    let root = tempfile::tempdir().unwrap();
    put(root.path(), "f", b"f");
    let mut srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "f", "-q"]).ok();
    let mut idle = Wire::connect(srv.addr, PATIENCE);
    idle.handshake();

    let status = srv
        .terminate(PATIENCE)
        .expect("server did not exit after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let (frames, _how) = idle.frames_until_closed();
    let codes: Vec<_> = frames.iter().filter_map(error_code).collect();
    assert_eq!(codes, vec![ErrorCode::ShuttingDown as u16], "{frames:?}");
    // Nothing listens any more.
    let run = ferry(out.path(), &["ls", &srv.host()]).fails();
    assert!(run.stderr.contains("connection refused"), "{run}");
}

#[test]
fn sigterm_with_a_stalled_transfer_exits_zero_after_the_grace_period() {
    let root = tempfile::tempdir().unwrap();
    huge_sparse(root.path(), "huge.bin");
    let mut srv = Server::start(root.path(), &["--grace", "1"]);
    let _holder = stalled_download(&srv, "huge.bin", PATIENCE);
    let status = srv
        .terminate(PATIENCE)
        .expect("server did not exit within the grace period");
    assert!(status.success(), "exit status {status}");
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(300_000, 91);
    put(root.path(), "one.bin", &data);
    put(root.path(), "dir/two.txt", b"two");
    let srv = Server::start(root.path(), &[]);
    let mut conn = Wire::connect(srv.addr, PATIENCE);
    // Everything in one write, before the server has said a word.
    let mut bytes = hello();
    bytes.extend(encode(&[
        Frame::Message {
            text: b"pipelined".to_vec(),
        },
        get_frame("missing"),
        Frame::Stat {
            path: b"one.bin".to_vec(),
        },
        Frame::List {
            path: b"dir".to_vec(),
        },
        get_frame("one.bin"),
        Frame::Get(GetRequest {
            path: b"one.bin".to_vec(),
            offset: 1000,
            length: Some(10),
            if_unchanged: None,
        }),
        get_frame("dir/two.txt"),
    ]));
    conn.send(&bytes);
    conn.read_magic().expect("server closed before its magic");
    assert!(matches!(
        conn.expect_frame("Welcome"),
        Frame::Welcome { .. }
    ));
    assert!(matches!(conn.expect_frame("Ack"), Frame::Ack { .. }));
    let missing = conn.expect_frame("Error");
    assert_eq!(
        error_code(&missing),
        Some(ErrorCode::NotFound as u16),
        "{missing:?}"
    );
    match conn.expect_frame("StatReply") {
        Frame::StatReply(r) => assert_eq!(r.size, data.len() as u64),
        other => panic!("{other:?}"),
    }
    match conn.expect_frame("ListEntry") {
        Frame::ListEntry(e) => assert_eq!(e.name, b"two.txt"),
        other => panic!("{other:?}"),
    }
    assert_eq!(conn.expect_frame("ListEnd"), Frame::ListEnd { count: 1 });
    let mut read_get = |want: &[u8], offset: u64| {
        let Frame::FileHeader(h) = conn.expect_frame("FileHeader") else {
            panic!("expected FileHeader");
        };
        assert_eq!(h.offset, offset);
        assert_eq!(
            conn.read_body(h.length as usize)
                .expect("server closed inside a body"),
            want
        );
        conn.expect_frame("Trailer")
    };
    let whole = *blake3::hash(&data).as_bytes();
    assert_eq!(read_get(&data, 0), Frame::Trailer { hash: whole });
    // A range's trailer hashes the whole file, not the range.
    assert_eq!(
        read_get(&data[1000..1010], 1000),
        Frame::Trailer { hash: whole }
    );
    assert_eq!(
        read_get(b"two", 0),
        Frame::Trailer {
            hash: *blake3::hash(b"two").as_bytes()
        }
    );
    // Then a clean close from our side ends it cleanly.
    conn.half_close().unwrap();
    let (frames, how) = conn.frames_until_closed();
    assert!(frames.is_empty(), "{frames:?}");
    assert_eq!(how, Closed::Eof);
    assert!(srv.wait_stdout(PATIENCE, |l| l.ends_with(": pipelined")));
}

/// What a silent peer receives from `ferry ARGS…` (`HOST` is replaced by
/// its address) before it answers anything: the frames after the magic on
/// the connection that sent the most, read until one has sent two or 5 s
/// passed. Every connection is then welcomed and its request refused, so
/// the command ends.
fn frames_sent_before_any_answer(args: &[&str]) -> Vec<Frame> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let argv: Vec<&str> = args
        .iter()
        .map(|a| if *a == "HOST" { host.as_str() } else { a })
        .collect();
    let cwd = tempfile::tempdir().unwrap();
    let mut child = ferry_spawn(cwd.path(), &argv);
    let parse = |buf: &[u8]| {
        let mut frames = Vec::new();
        let mut rest = buf.get(ferry::protocol::MAGIC.len()..).unwrap_or_default();
        while let Ok(Some((f, used))) = Frame::parse(rest) {
            frames.push(f);
            rest = &rest[used..];
        }
        frames
    };
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    let mut most = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while most.len() < 2 && Instant::now() < deadline {
        while let Ok((s, _)) = listener.accept() {
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            conns.push((s, Vec::new()));
        }
        for (s, buf) in &mut conns {
            let mut chunk = [0u8; 4096];
            if let Ok(n) = s.read(&mut chunk) {
                buf.extend_from_slice(&chunk[..n]);
            }
            let frames = parse(buf);
            if frames.len() > most.len() {
                most = frames;
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut out = ferry::protocol::MAGIC.to_vec();
    Frame::Welcome {
        version: 1,
        caps: 0,
    }
    .encode(&mut out);
    Frame::error(ErrorCode::NotFound, "no such file").encode(&mut out);
    for (s, _) in &mut conns {
        let _ = s.write_all(&out);
        let _ = s.shutdown(Shutdown::Write);
    }
    let _ = child.wait();
    most
}

/// `ferry get` and `ferry ls` send their first request with the hello,
/// without waiting a round trip for the welcome (over a 50 ms link: a
/// single-stream `get` starts receiving at 2 round trips instead of 3, and
/// `-j` lanes' GETs left at 109 ms from the start instead of 266 ms).
#[test]
fn the_first_request_leaves_with_the_hello() {
    for args in [
        &["get", "HOST", "a.txt", "-o", "out/"][..],
        &["get", "HOST", "a.txt", "-o", "-"],
        &["get", "-j", "4", "HOST", "a.txt", "-o", "out/"],
        &["get", "-r", "HOST", "dir"],
        &["ls", "HOST", "dir"],
    ] {
        let frames = frames_sent_before_any_answer(args);
        assert!(
            matches!(frames.first(), Some(Frame::Hello { .. })) && frames.len() == 2,
            "{args:?}: before any answer the server got {:?}",
            frames.iter().map(Frame::name).collect::<Vec<_>>()
        );
        let second = frames[1].name();
        assert!(
            ["Get", "Stat", "List"].contains(&second),
            "{args:?}: {second}"
        );
    }
}
