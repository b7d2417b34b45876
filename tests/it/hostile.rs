//! Hostile input against the real server: traversal spellings over both
//! protocols, a thousand idle and slowloris connections, malformed and
//! oversized frames, a connection flood past the limit. The claims under
//! test are the README's: nothing outside the root is readable, one request
//! cannot bring the server down, abuse is bounded.
//!
//! Peers here are hand-driven `std::net` sockets (a real client would not
//! misbehave this way); frames are built with the library's codec, or by
//! hand where the codec refuses to build them. Every wait is bounded (read
//! timeouts, deadlines); nothing asserts how long anything took. Figures
//! for the reliability report are printed with `eprintln!`
//! (`cargo test --test it hostile -- --nocapture`).

use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ferry::protocol::{ErrorCode, Frame, GetRequest, MAGIC, MAX_MESSAGE_LEN, MAX_PATH_LEN};

use crate::support::*;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long a refusal may take to arrive before a test calls it a hang.
/// Generous (a slow CI machine must not flake); a hang fails.
const ANSWER_BOUND: Duration = Duration::from_secs(10);

fn put(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    p
}

fn frame(f: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    f.encode(&mut v);
    v
}

/// A frame from its type byte and payload, built by hand: the codec
/// refuses to encode frames that break its limits, and these tests need
/// exactly those.
fn raw_frame(ty: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(1 + payload.len()).unwrap();
    let mut v = len.to_be_bytes().to_vec();
    v.push(ty);
    v.extend_from_slice(payload);
    v
}

/// A `Get` for any path bytes (even beyond the protocol's limits) with any
/// flags byte; `extra` is appended after the flags.
fn raw_get(path: &[u8], flags: u8, extra: &[u8]) -> Vec<u8> {
    let mut p = u16::try_from(path.len()).unwrap().to_be_bytes().to_vec();
    p.extend_from_slice(path);
    p.extend_from_slice(&0u64.to_be_bytes());
    p.push(flags);
    p.extend_from_slice(extra);
    raw_frame(0x02, &p)
}

fn error_code(f: &Frame) -> Option<u16> {
    match f {
        Frame::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// Whether `needle` occurs anywhere in `hay`.
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// A well-behaved `ferry get` of `name`; panics unless it gets `want`.
fn well_behaved_get(srv: &Server, name: &str, want: &[u8], context: &str) {
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), name, "-q"]);
    assert!(
        run.status.success(),
        "after {context}: a well-behaved client failed\n{run}"
    );
    assert!(
        fs::read(out.path().join(name)).unwrap() == want,
        "after {context}: wrong bytes\n{run}"
    );
}

// ---------------------------------------------------------------------------
// Traversal, both protocols

/// What a spelling may yield.
#[derive(Debug, Clone)]
enum Expect {
    /// Nothing: an error frame (native) or zero bytes (raw).
    Refused,
    /// A look-alike that names a real file inside the root: that file's
    /// bytes and nothing else.
    Inside(Vec<u8>),
    /// Either (a name whose resolution may legitimately stay inside).
    RefusedOrInside(Vec<u8>),
}

const DECOY: &[u8] = b"decoy: a look-alike name inside the root\n";
const DOTS3: &[u8] = b"a file really named '...'\n";
const X: &[u8] = b"x at the root\n";

struct TraversalFixture {
    _base: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    secret: Vec<u8>,
}

/// `base/root` is served; `base/outside/secret.txt` holds a secret no
/// answer may ever contain; the root holds every kind of symlink out, and
/// look-alike names that are real entries inside.
fn traversal_fixture() -> TraversalFixture {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("root");
    let secret = format!(
        "FERRY-SECRET-{:016x}-must-never-be-served\n",
        u64::from_le_bytes(random_bytes(8, 0x5ec2e7).try_into().unwrap())
    )
    .into_bytes();
    put(&base.join("outside"), "secret.txt", &secret);
    put(&root, "x", X);
    put(&root, "a/inside.txt", b"inside\n");
    // Symlinks out of the root: absolute, relative, chained, to a parent
    // directory, to /etc, through /proc, looping, out-and-back-in.
    symlink("/etc", root.join("etc_link")).unwrap();
    symlink("/etc/passwd", root.join("passwd_link")).unwrap();
    symlink(base.join("outside/secret.txt"), root.join("abs_secret")).unwrap();
    symlink("../outside/secret.txt", root.join("rel_secret")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("../..", root.join("a/upup")).unwrap();
    symlink("hop2", root.join("hop1")).unwrap();
    symlink("a/hop3", root.join("hop2")).unwrap();
    symlink("../../outside/secret.txt", root.join("a/hop3")).unwrap();
    symlink("/proc/self/root", root.join("proc_root")).unwrap();
    symlink("loop_b", root.join("loop_a")).unwrap();
    symlink("loop_a", root.join("loop_b")).unwrap();
    symlink("../../root/x", root.join("a/out_and_back")).unwrap();
    symlink(base.join("outside"), root.join("outside_dir")).unwrap();
    // Look-alikes of ".." that are real names inside the root.
    put(&root, "\u{2024}\u{2024}/outside/secret.txt", DECOY);
    put(&root, "...", DOTS3);
    TraversalFixture {
        _base: tmp,
        base,
        root,
        secret,
    }
}

/// Every spelling we know of for "something outside the root".
fn spellings(fx: &TraversalFixture) -> Vec<(String, Vec<u8>, Expect)> {
    use Expect::*;
    let s = |p: &str| p.as_bytes().to_vec();
    let abs_secret = fx.base.join("outside/secret.txt");
    // One line per spelling: a table reads better than rustfmt's layout.
    #[rustfmt::skip]
    let v: Vec<(String, Vec<u8>, Expect)> = [
        ("..", s(".."), Refused),
        ("../..", s("../.."), Refused),
        ("../outside/secret.txt", s("../outside/secret.txt"), Refused),
        ("a/../../b", s("a/../../b"), Refused),
        ("a/../../outside/secret.txt", s("a/../../outside/secret.txt"), Refused),
        ("deep ../ x12", s(&format!("{}etc/passwd", "../".repeat(12))), Refused),
        ("./../outside/secret.txt", s("./../outside/secret.txt"), Refused),
        ("a/./../../outside", s("a/./../../outside/secret.txt"), Refused),
        ("x/..", s("x/.."), Refused),
        ("/etc/passwd", s("/etc/passwd"), Refused),
        ("absolute secret", abs_secret.as_os_str().as_encoded_bytes().to_vec(), Refused),
        ("//etc/passwd", s("//etc/passwd"), Refused),
        ("a//../../outside", s("a//../../outside/secret.txt"), Refused),
        ("..\\outside\\secret.txt", s("..\\outside\\secret.txt"), Refused),
        ("\\..\\outside\\secret.txt", s("\\..\\outside\\secret.txt"), Refused),
        ("a\\..\\..\\outside", s("a\\..\\..\\outside\\secret.txt"), Refused),
        ("NUL then ../", b"x\0/../../outside/secret.txt".to_vec(), Refused),
        ("..NUL", b"..\0/outside/secret.txt".to_vec(), Refused),
        ("%2e%2e/", s("%2e%2e/outside/secret.txt"), Refused),
        ("%2e%2e%2f", s("%2e%2e%2foutside%2fsecret.txt"), Refused),
        ("%252e%252e/ (double-encoded)", s("%252e%252e/outside/secret.txt"), Refused),
        ("..%c0%af", s("..%c0%afoutside%c0%afsecret.txt"), Refused),
        ("overlong UTF-8 dots C0 AE", b"\xc0\xae\xc0\xae/outside/secret.txt".to_vec(), Refused),
        ("invalid UTF-8 FF FE", b"\xff\xfe/../outside/secret.txt".to_vec(), Refused),
        ("300-byte component", s(&"a".repeat(300)), Refused),
        ("5000-byte path", s(&format!("{}outside/secret.txt", "../".repeat(1661))), Refused),
        ("4096-byte path of ../", s(&format!("{}{}", "../".repeat(1365), "a")), Refused),
        ("symlink to /etc", s("etc_link/passwd"), Refused),
        ("symlink to /etc itself", s("etc_link"), Refused),
        ("symlink to /etc/passwd", s("passwd_link"), Refused),
        ("absolute symlink to the secret", s("abs_secret"), Refused),
        ("relative symlink to the secret", s("rel_secret"), Refused),
        ("symlink chain leaving the root", s("hop1"), Refused),
        ("symlink chain, middle link", s("a/hop3"), Refused),
        ("symlink to the parent dir", s("up/outside/secret.txt"), Refused),
        ("symlink to the grandparent", s("a/upup/outside/secret.txt"), Refused),
        ("symlink to an outside dir", s("outside_dir/secret.txt"), Refused),
        ("symlink to /proc/self/root", s("proc_root/etc/passwd"), Refused),
        ("/proc/self/root spelled out", s("proc/self/root/etc/passwd"), Refused),
        ("symlink loop", s("loop_a"), Refused),
        ("symlink out and back in", s("a/out_and_back"), RefusedOrInside(X.to_vec())),
        ("one-dot leaders U+2024 (exists inside)", s("\u{2024}\u{2024}/outside/secret.txt"), Inside(DECOY.to_vec())),
        ("two-dot leader U+2025", s("\u{2025}/outside/secret.txt"), Refused),
        ("fullwidth ．．", s("\u{ff0e}\u{ff0e}/outside/secret.txt"), Refused),
        ("fullwidth ．．／", s("\u{ff0e}\u{ff0e}\u{ff0f}outside\u{ff0f}secret.txt"), Refused),
        ("small full stops U+FE52", s("\u{fe52}\u{fe52}/outside/secret.txt"), Refused),
        ("..∕ division slash", s("..\u{2215}outside\u{2215}secret.txt"), Refused),
        ("..;/", s("..;/outside/secret.txt"), Refused),
        ("... (exists inside)", s("..."), Inside(DOTS3.to_vec())),
        (".../", s(".../outside/secret.txt"), Refused),
        ("trailing dot", s("../outside/secret.txt."), Refused),
        ("trailing dot on a symlink out", s("abs_secret."), Refused),
        ("trailing dot on a dir symlink out", s("etc_link./passwd"), Refused),
        ("trailing dots and space", s(".. ./outside/secret.txt"), Refused),
        ("trailing space", s(".. /outside/secret.txt"), Refused),
        ("trailing slash", s("../outside/"), Refused),
        ("file:// URL", s("file:///etc/passwd"), Refused),
        ("~ expansion", s("~/../outside/secret.txt"), Refused),
        // Raw names end at a newline, so raw may serve "x" (inside).
        ("newline inside", s("x\n../../outside/secret.txt"), RefusedOrInside(X.to_vec())),
        ("empty path", s(""), Refused),
        (".", s("."), Refused),
    ]
    .into_iter()
    .map(|(l, p, e)| (l.to_string(), p, e))
    .collect();
    let distinct: std::collections::HashSet<&Vec<u8>> = v.iter().map(|(_, p, _)| p).collect();
    assert_eq!(distinct.len(), v.len(), "a spelling is listed twice");
    v
}

/// What a native `Get` was answered with.
#[derive(Debug)]
pub(crate) enum NativeAnswer {
    Error(u16, String),
    File(Vec<u8>),
}

/// Sends one hostile `Get` on a fresh native connection, half-closes, and
/// reads everything until the server closes. Returns the parsed answer and
/// every byte received.
pub(crate) fn native_get(addr: SocketAddr, path: &[u8]) -> (NativeAnswer, Vec<u8>) {
    let mut w = Wire::connect(addr, ANSWER_BOUND);
    let mut bytes = hello();
    bytes.extend(raw_get(path, 0, &[]));
    w.send(&bytes);
    let _ = w.half_close();
    let (all, _how) = w.read_to_close();
    let mut rest = all.strip_prefix(&MAGIC[..]).expect("server magic");
    let next = |rest: &mut &[u8]| {
        let (f, used) = Frame::parse(rest)
            .expect("valid frame")
            .expect("complete frame before close");
        *rest = &rest[used..];
        f
    };
    // A path the codec rejects outright is refused before the Welcome.
    let first = next(&mut rest);
    let answer = match first {
        Frame::Welcome { .. } => next(&mut rest),
        other => other,
    };
    let answer = match answer {
        Frame::Error { code, message } => NativeAnswer::Error(code, message),
        Frame::FileHeader(h) => {
            let body = rest[..h.length as usize].to_vec();
            rest = &rest[h.length as usize..];
            assert!(
                matches!(next(&mut rest), Frame::Trailer { .. }),
                "no trailer"
            );
            NativeAnswer::File(body)
        }
        other => panic!("unexpected answer {other:?}"),
    };
    (answer, all)
}

/// Sends a raw-protocol file name, half-closes, returns every byte until
/// the server closes.
pub(crate) fn raw_get_bytes(addr: SocketAddr, name: &[u8]) -> Vec<u8> {
    let mut w = Wire::connect(addr, ANSWER_BOUND);
    // A name longer than the raw limit is cut by the server, which may
    // close before taking the rest: that refusal is fine.
    let _ = w.try_send(name);
    let _ = w.half_close();
    w.read_to_close().0
}

/// A path's bytes in a URL: every byte %-encoded (`all`), or only those a
/// request line cannot carry as they are (so `..`, `/`, `\\` stay literal).
pub(crate) fn url_path(path: &[u8], all: bool) -> String {
    let mut out = String::from("/");
    for &b in path {
        if !all && (0x21..0x7f).contains(&b) && !b"%?#".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends one request line `GET TARGET HTTP/1.1` (and a Host) on a fresh
/// connection; returns the status code (0 if the server only closed) and
/// every byte received.
pub(crate) fn http_get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let mut w = Wire::connect(addr, ANSWER_BOUND);
    let req = format!("GET {target} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    let _ = w.try_send(req.as_bytes());
    let (all, _how) = w.read_to_close();
    let status = std::str::from_utf8(all.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, all)
}

/// The body of an HTTP response (after the blank line).
pub(crate) fn http_body(all: &[u8]) -> &[u8] {
    all.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &all[i + 4..])
}

#[test]
fn traversal_battery_over_native_tutorial_and_http_never_leaks_the_secret() {
    let fx = traversal_fixture();
    // --hidden: the most that is ever shared. Nothing outside the root may
    // leak even then (hidden names are covered by their own test).
    let srv = Server::start(&fx.root, &["--hidden"]);
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    let passwd_line = passwd
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    let list = spellings(&fx);
    let leaks = |bytes: &[u8]| contains(bytes, &fx.secret) || contains(bytes, &passwd_line);

    let mut refused_native = 0;
    let mut refused_raw = 0;
    let mut inside = 0;
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut http_statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut table = Vec::new();
    for (label, path, expect) in &list {
        // Native: an Error frame, or the inside file's own bytes.
        let (answer, all) = native_get(srv.addr, path);
        assert!(!leaks(&all), "{label}: native answer leaks outside bytes");
        match (&answer, expect) {
            (NativeAnswer::Error(code, msg), Expect::Refused | Expect::RefusedOrInside(_)) => {
                let name = ErrorCode::try_from(*code)
                    .map(|c| format!("{c:?}"))
                    .unwrap_or_else(|_| code.to_string());
                assert!(
                    !matches!(ErrorCode::try_from(*code), Ok(ErrorCode::Io)),
                    "{label}: refused with an I/O error: {msg}"
                );
                table.push(format!("  {label:<42} native {name}"));
                *codes.entry(name).or_default() += 1;
                refused_native += 1;
            }
            (NativeAnswer::File(body), Expect::Inside(want) | Expect::RefusedOrInside(want)) => {
                assert!(
                    body == want,
                    "{label}: served {} unexpected bytes",
                    body.len()
                );
                table.push(format!(
                    "  {label:<42} native: the inside file's {} bytes",
                    body.len()
                ));
                inside += 1;
            }
            _ => panic!("{label}: {path:?} answered {answer:?}, expected {expect:?}"),
        }

        // HTTP, in three spellings of the target (every byte %-encoded;
        // only what must be; absolute-form), and as an archive request: a
        // 4xx, a listing of a directory inside, or the inside file's bytes.
        let enc = url_path(path, true);
        let literal = url_path(path, false);
        let absolute = format!("http://test{literal}");
        let archive = format!("{enc}?archive=tar");
        for target in [&enc, &literal, &absolute, &archive] {
            let (status, all) = http_get(srv.addr, target);
            assert!(!leaks(&all), "{label}: HTTP {target} leaks outside bytes");
            assert!(
                (400..500).contains(&status) || status == 200 || status == 301,
                "{label}: HTTP {target} answered {status}"
            );
            *http_statuses.entry(status).or_default() += 1;
            if status == 200 && !target.contains('?') {
                let body = http_body(&all);
                if let Expect::Inside(want) | Expect::RefusedOrInside(want) = expect {
                    if !body.starts_with(b"<!doctype") {
                        assert!(
                            body == want.as_slice(),
                            "{label}: HTTP {target} served wrong bytes"
                        );
                    }
                }
            }
        }

        // Raw: nothing at all, or the inside file's own bytes.
        let got = raw_get_bytes(srv.addr, path);
        assert!(!leaks(&got), "{label}: raw answer leaks outside bytes");
        if let Some(row) = table.last_mut() {
            row.push_str(&format!(", raw {} bytes", got.len()));
        }
        match expect {
            Expect::Refused => {
                assert!(got.is_empty(), "{label}: raw sent {} bytes", got.len());
                refused_raw += 1;
            }
            Expect::Inside(want) => assert!(got == *want, "{label}: raw sent wrong bytes"),
            Expect::RefusedOrInside(want) => {
                assert!(
                    got.is_empty() || got == *want,
                    "{label}: raw sent wrong bytes"
                );
                if got.is_empty() {
                    refused_raw += 1;
                }
            }
        }
    }
    // Directory symlinks leaving the root cannot be listed either.
    let mut w = Wire::connect(srv.addr, ANSWER_BOUND);
    w.handshake();
    for dir in ["etc_link", "up", "a/upup", "outside_dir", "proc_root"] {
        w.send(&frame(&Frame::List {
            path: dir.as_bytes().to_vec(),
        }));
        let answer = w.read_frame().expect("answer");
        assert!(
            error_code(&answer).is_some_and(|c| c < 100),
            "List {dir}: {answer:?}"
        );
    }

    assert!(list.len() >= 30, "only {} spellings", list.len());
    assert!(srv.stderr().lines().all(|l| !l.contains("panicked")));
    well_behaved_get(&srv, "x", X, "the traversal battery");
    eprintln!(
        "FIGURE traversal: {} spellings, each over native, the tutorial's protocol and HTTP (4 targets each): \
         native refused {refused_native} (codes {codes:?}), tutorial sent nothing for {refused_raw}; HTTP statuses \
         {http_statuses:?}; {inside} look-alikes that really exist inside the root served only their own bytes; \
         the secret and /etc/passwd never appeared\n{}",
        list.len(),
        table.join("\n")
    );
}

// ---------------------------------------------------------------------------
// A thousand idle connections

/// Raises this process's open-file limit to its hard limit (the test holds
/// a thousand sockets at once).
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idler {
    /// Connects and says nothing.
    Silent,
    /// Sends the magic and half a Hello, then nothing.
    HalfHello,
    /// Sends one byte of magic+Hello per second.
    Trickle,
}

struct Idle {
    stream: TcpStream,
    kind: Idler,
    sent: usize,
    closed: bool,
    got: Vec<u8>,
}

/// Opens `n` idle connections of the three kinds, round robin.
fn open_idlers(addr: SocketAddr, n: usize) -> Vec<Idle> {
    let script = hello();
    (0..n)
        .map(|i| {
            let kind = [Idler::Silent, Idler::HalfHello, Idler::Trickle][i % 3];
            let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).expect("connect");
            let sent = match kind {
                Idler::Silent => 0,
                Idler::HalfHello => MAGIC.len() + 7,
                Idler::Trickle => 1,
            };
            stream.write_all(&script[..sent]).unwrap();
            stream.set_nonblocking(true).unwrap();
            Idle {
                stream,
                kind,
                sent,
                closed: false,
                got: Vec::new(),
            }
        })
        .collect()
}

/// One byte more from each trickler that is still open.
fn trickle(idlers: &mut [Idle]) {
    let script = hello();
    for c in idlers
        .iter_mut()
        .filter(|c| c.kind == Idler::Trickle && !c.closed)
    {
        if c.sent < script.len() && c.stream.write(&script[c.sent..c.sent + 1]).is_ok() {
            c.sent += 1;
        }
    }
}

/// Reads what the server sent to each idler without blocking; marks the
/// ones the server closed. Returns how many are closed.
fn poll_closed(idlers: &mut [Idle]) -> usize {
    let mut buf = [0u8; 4096];
    for c in idlers.iter_mut().filter(|c| !c.closed) {
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    c.closed = true;
                    break;
                }
                Ok(n) => c.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.closed = true;
                    break;
                }
            }
        }
    }
    idlers.iter().filter(|c| c.closed).count()
}

fn connected_count(srv: &Server) -> usize {
    srv.stderr()
        .lines()
        .filter(|l| l.ends_with(": connected"))
        .count()
}

#[test]
fn a_thousand_idle_and_slowloris_connections_cost_little_and_time_out() {
    const N: usize = 1000;
    let limit = raise_nofile();
    assert!(
        limit >= 2 * N as u64 + 100,
        "open-file limit {limit} too low"
    );
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(1 << 20, 0x51_0e);
    put(root.path(), "file.bin", &data);

    // Default limits: all held at once, a real client still served.
    let srv = Server::start(root.path(), &[]);
    let rss_before = srv.rss_kib().expect("server RSS");
    let mut idlers = open_idlers(srv.addr, N);
    assert!(
        wait_until(PATIENCE, Duration::from_millis(20), || connected_count(
            &srv
        ) >= N),
        "server saw only {} of {N} connections",
        connected_count(&srv)
    );
    trickle(&mut idlers);
    well_behaved_get(&srv, "file.bin", &data, "1000 idle connections");
    trickle(&mut idlers);
    let rss_held = srv.rss_kib().expect("server RSS");
    let closed_early = poll_closed(&mut idlers);
    assert_eq!(
        closed_early, 0,
        "with a 30 s idle timeout and room for 4096, the server closed {closed_early} idle connections"
    );
    assert!(
        rss_held < 200 * 1024,
        "server RSS {rss_held} KiB with {N} idle connections"
    );
    drop(idlers);
    drop(srv);

    // --idle-timeout 2: the server closes every one of them by itself.
    let srv = Server::start(root.path(), &["--idle-timeout", "2"]);
    let mut idlers = open_idlers(srv.addr, N);
    let deadline = Instant::now() + PATIENCE;
    let mut last_trickle = Instant::now();
    let mut closed = 0;
    while Instant::now() < deadline {
        if last_trickle.elapsed() >= Duration::from_secs(1) {
            trickle(&mut idlers);
            last_trickle = Instant::now();
        }
        closed = poll_closed(&mut idlers);
        if closed == N {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let mut told = [0usize; 3];
    for c in &idlers {
        let timeout_frame = c
            .got
            .strip_prefix(&MAGIC[..])
            .and_then(|r| Frame::parse(r).ok().flatten())
            .is_some_and(|(f, _)| error_code(&f) == Some(ErrorCode::Timeout as u16));
        if timeout_frame {
            told[c.kind as usize] += 1;
        }
    }
    assert_eq!(
        closed, N,
        "only {closed} of {N} idle connections were closed"
    );
    // Those that began speaking native ferry were told why.
    assert_eq!(told[Idler::HalfHello as usize], N / 3, "{told:?}");
    assert!(told[Idler::Trickle as usize] >= N / 3, "{told:?}");
    well_behaved_get(&srv, "file.bin", &data, "1000 idle connections timed out");
    eprintln!(
        "FIGURE slowloris: {N} idle connections ({} silent, {} magic+half Hello, {} one byte/s) held at once \
         with default limits: none closed, a normal get succeeded, server RSS {} KiB before, {} KiB with all \
         {N} held ({:.1} KiB each); with --idle-timeout 2 the server closed {closed}/{N} by itself \
         ({} half-Hello and {} tricklers got Error{{Timeout}} first; silent ones just closed)",
        N.div_ceil(3),
        N / 3,
        N / 3,
        rss_before,
        rss_held,
        (rss_held.saturating_sub(rss_before)) as f64 / N as f64,
        told[Idler::HalfHello as usize],
        told[Idler::Trickle as usize],
    );
}

// ---------------------------------------------------------------------------
// Malformed and oversized frames

/// What a malformed or boundary input must get.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Magic, possibly a Welcome, then `Error{code}` and a close.
    Fatal(ErrorCode),
    /// A request-level answer (this error code, or `None` for success),
    /// and the connection stays usable.
    Answer(Option<ErrorCode>),
}

/// One malformed or boundary input.
struct Case {
    label: &'static str,
    bytes: Vec<u8>,
    /// Half-close after sending (the peer ends its stream there).
    close: bool,
    reply: Reply,
}

impl Case {
    fn new(label: &'static str, bytes: Vec<u8>, close: bool, reply: Reply) -> Case {
        Case {
            label,
            bytes,
            close,
            reply,
        }
    }
}

fn magic_then(rest: &[u8]) -> Vec<u8> {
    [&MAGIC[..], rest].concat()
}

fn with_hello(rest: &[u8]) -> Vec<u8> {
    [&hello()[..], rest].concat()
}

#[test]
fn malformed_and_oversized_frames_get_an_error_and_a_close_and_the_server_lives() {
    let root = tempfile::tempdir().unwrap();
    let ok = b"a well-behaved client's file\n";
    put(root.path(), "ok.txt", ok);
    let mut srv = Server::start(root.path(), &[]);

    let h = hello();
    let get_ok = raw_get(b"ok.txt", 0, &[]);
    let long_path = {
        // 4096 bytes, every component within 255: valid, just missing.
        let comp = "c".repeat(254);
        let mut p = std::iter::repeat_n(comp.as_str(), 17)
            .collect::<Vec<_>>()
            .join("/");
        p.truncate(MAX_PATH_LEN);
        p.into_bytes()
    };
    assert_eq!(long_path.len(), MAX_PATH_LEN);
    let msg = |len: usize| {
        let mut p = u16::try_from(len).unwrap().to_be_bytes().to_vec();
        p.extend(std::iter::repeat_n(b'm', len));
        raw_frame(0x05, &p)
    };
    let mut bad_utf8_error = 102u16.to_be_bytes().to_vec();
    bad_utf8_error.extend_from_slice(&[0, 2, 0xff, 0xfe]);
    use ErrorCode::*;
    use Reply::*;
    let fatal = |label, bytes, code| Case::new(label, bytes, false, Fatal(code));
    let fatal_at_eof = |label, bytes, code| Case::new(label, bytes, true, Fatal(code));
    let answer = |label, bytes, reply| Case::new(label, bytes, false, reply);
    let file_header = Frame::FileHeader(ferry::protocol::FileHeader {
        offset: 0,
        length: 0,
        size: 0,
        mtime_ns: 0,
    });
    let get_max = Frame::Get(GetRequest {
        path: b"ok.txt".to_vec(),
        offset: u64::MAX,
        length: None,
        if_unchanged: None,
    });
    let hello_v = |version| {
        frame(&Frame::Hello {
            version,
            caps: u64::MAX,
            token: Some(Vec::new()),
        })
    };
    let mut stat_4097 = 4097u16.to_be_bytes().to_vec();
    stat_4097.extend_from_slice(&[b'p'; MAX_PATH_LEN + 1]);
    // One line per case: a table reads better than rustfmt's layout.
    #[rustfmt::skip]
    let cases = vec![
        fatal("len 65537, nothing more", magic_then(&[0, 1, 0, 1]), BadFrame),
        fatal("len u32::MAX", magic_then(&[0xff; 4]), BadFrame),
        fatal("len 65537 after Hello", with_hello(&[0, 1, 0, 1]), BadFrame),
        fatal("len 0", magic_then(&[0, 0, 0, 0]), BadFrame),
        fatal("len 0 after Hello", with_hello(&[0, 0, 0, 0]), BadFrame),
        fatal("unknown type 0x06", magic_then(&raw_frame(0x06, &[])), BadFrame),
        fatal("unknown type 0x7f", with_hello(&raw_frame(0x7f, b"xx")), BadFrame),
        fatal("unknown type 0x88", with_hello(&raw_frame(0x88, &[])), BadFrame),
        fatal("0x89 then garbage", b"\x89GARBAGE-GARBAGE".to_vec(), BadFrame),
        fatal("magic with \\n\\r swapped", b"\x89FERRY\n\r".to_vec(), BadFrame),
        fatal("0x89 then HTTP", b"\x89GET / HTTP/1.1\r\n\r\n".to_vec(), BadFrame),
        fatal("Hello version 0", magic_then(&hello_v(0)), UnsupportedVersion),
        fatal("Hello + 1 byte", magic_then(&raw_frame(0x01, &[0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])), BadFrame),
        fatal("Hello too short", magic_then(&raw_frame(0x01, &[0, 1, 0])), BadFrame),
        fatal_at_eof("truncated magic, then close", b"\x89FER".to_vec(), BadFrame),
        fatal_at_eof("truncated Hello, then close", h[..MAGIC.len() + 7].to_vec(), BadFrame),
        fatal_at_eof("truncated Get, then close", with_hello(&get_ok[..9]), BadFrame),
        fatal_at_eof("len 65536 cut short, then close", with_hello(&[0, 1, 0, 0, 5, 0xff, 0xfb, b'm']), BadFrame),
        fatal("Get flag bit 0x04", with_hello(&raw_get(b"ok.txt", 0x04, &[])), BadFrame),
        fatal("Get flag bit 0x80", with_hello(&raw_get(b"ok.txt", 0x80, &[])), BadFrame),
        fatal("Get length flag, no length", with_hello(&raw_get(b"ok.txt", 0x01, &[])), BadFrame),
        fatal("Get path of 4097 bytes", with_hello(&raw_get(&[b'p'; MAX_PATH_LEN + 1], 0, &[])), BadFrame),
        fatal("Get path longer than its frame", with_hello(&raw_frame(0x02, &[0xff, 0xff, b'a'])), BadFrame),
        fatal("Stat path of 4097 bytes", with_hello(&raw_frame(0x03, &stat_4097)), BadFrame),
        fatal("Message of 61441 bytes", with_hello(&msg(MAX_MESSAGE_LEN + 1)), BadFrame),
        fatal("Error with invalid UTF-8", with_hello(&raw_frame(0xff, &bad_utf8_error)), BadFrame),
        fatal("Welcome instead of Hello", magic_then(&frame(&Frame::Welcome { version: 1, caps: 0 })), UnexpectedFrame),
        fatal("FileHeader from the client", with_hello(&frame(&file_header)), UnexpectedFrame),
        fatal("Trailer from the client", with_hello(&frame(&Frame::Trailer { hash: [0; 32] })), UnexpectedFrame),
        fatal("Ack from the client", with_hello(&frame(&Frame::Ack { text: b"hi".to_vec() })), UnexpectedFrame),
        fatal("Error from the client", with_hello(&frame(&Frame::error(BadFrame, "you first"))), UnexpectedFrame),
        fatal("a second Hello", with_hello(&h[MAGIC.len()..]), UnexpectedFrame),
        fatal("a Get before Hello", magic_then(&get_ok), UnexpectedFrame),
        // Boundary values that are valid: answered, connection kept.
        answer("Get of the empty path", with_hello(&raw_get(b"", 0, &[])), Answer(Some(IsADirectory))),
        // Valid on the wire, but one byte over what Linux opens (PATH_MAX
        // counts the NUL): refused as an invalid path, not an I/O error.
        answer("Get path of 4096 bytes", with_hello(&raw_get(&long_path, 0, &[])), Answer(Some(InvalidPath))),
        answer("List path of 4096 bytes", with_hello(&frame(&Frame::List { path: long_path.clone() })), Answer(Some(InvalidPath))),
        answer("Get path of 4095 bytes", with_hello(&raw_get(&long_path[..MAX_PATH_LEN - 1], 0, &[])), Answer(Some(NotFound))),
        answer("Message of 0 bytes", with_hello(&msg(0)), Answer(None)),
        answer("Message of 61440 bytes", with_hello(&msg(MAX_MESSAGE_LEN)), Answer(None)),
        answer("Get offset u64::MAX", with_hello(&frame(&get_max)), Answer(Some(RangeNotSatisfiable))),
        answer("Hello v65535, all caps", [magic_then(&hello_v(u16::MAX)), msg(2)].concat(), Answer(None)),
    ];

    let mut fatal = 0;
    let mut answered = 0;
    for Case {
        label,
        bytes,
        close,
        reply,
    } in &cases
    {
        let mut w = Wire::connect(srv.addr, ANSWER_BOUND);
        // The server may refuse before taking everything: that is allowed.
        let _ = w.try_send(bytes);
        if *close {
            let _ = w.half_close();
        }
        let magic = w.read_magic();
        assert!(magic.is_ok(), "{label}: closed without its magic");
        let (frames, _how) = match reply {
            Fatal(_) => w.frames_until_closed(),
            Answer(_) => (vec![w.read_frame().expect("Welcome")], Closed::Eof),
        };
        match reply {
            Fatal(code) => {
                // At most a Welcome (if the Hello was fine), then the error.
                let errors: Vec<u16> = frames.iter().filter_map(error_code).collect();
                assert_eq!(errors, vec![*code as u16], "{label}: {frames:?}");
                assert!(
                    matches!(frames.last(), Some(Frame::Error { .. }))
                        && frames.len() <= 2
                        && frames
                            .iter()
                            .all(|f| matches!(f, Frame::Error { .. } | Frame::Welcome { .. })),
                    "{label}: {frames:?}"
                );
                fatal += 1;
            }
            Answer(_) => {
                let welcome = &frames[0];
                if let Frame::Welcome { version, caps } = welcome {
                    assert_eq!((*version, *caps), (1, 0), "{label}");
                } else {
                    panic!("{label}: expected Welcome, got {welcome:?}");
                }
                let answer = w.read_frame().expect("answer");
                match reply {
                    Answer(Some(code)) => assert_eq!(
                        error_code(&answer),
                        Some(*code as u16),
                        "{label}: {answer:?}"
                    ),
                    Answer(None) => {
                        assert!(matches!(answer, Frame::Ack { .. }), "{label}: {answer:?}")
                    }
                    _ => unreachable!(),
                }
                // Still usable: the same connection serves a file.
                w.send(&get_ok);
                let Ok(Frame::FileHeader(hd)) = w.read_frame() else {
                    panic!("{label}: connection not usable afterwards");
                };
                assert_eq!(w.read_body(hd.length as usize).unwrap(), ok, "{label}");
                assert!(
                    matches!(w.read_frame(), Ok(Frame::Trailer { .. })),
                    "{label}"
                );
                answered += 1;
            }
        }
        well_behaved_get(&srv, "ok.txt", ok, label);
    }
    assert!(srv.is_running(), "the server died");
    let log = srv.stderr();
    assert!(!log.contains("panicked"), "server log:\n{log}");
    eprintln!(
        "FIGURE malformed frames: {} inputs; {fatal} malformed ones each got MAGIC + one Error frame and a close, \
         {answered} boundary-valid ones were answered with the connection kept; a well-behaved get \
         succeeded after every one; the server never died",
        cases.len()
    );
}

// ---------------------------------------------------------------------------
// A flood past --max-connections

#[test]
fn flood_past_max_connections_gets_prompt_busy_answers_and_service_resumes() {
    const LIMIT: usize = 8;
    const RAW_FLOOD: usize = 50;
    const CLI_FLOOD: usize = 6;
    let root = tempfile::tempdir().unwrap();
    huge_sparse(root.path(), "huge.bin");
    put(root.path(), "small.txt", b"small");
    let mut srv = Server::start(root.path(), &["--max-connections", &LIMIT.to_string()]);
    let holders: Vec<Wire> = (0..LIMIT)
        .map(|_| stalled_download(&srv, "huge.bin", ANSWER_BOUND))
        .collect();

    // Fifty native clients at once, each on its own thread.
    let addr = srv.addr;
    let flood: Vec<_> = (0..RAW_FLOOD)
        .map(|_| {
            thread::spawn(move || {
                let started = Instant::now();
                let mut w = Wire::connect(addr, ANSWER_BOUND);
                let _ = w.try_send(&hello());
                w.read_magic().expect("busy answer starts with the magic");
                let (frames, _how) = w.frames_until_closed();
                (frames, started.elapsed())
            })
        })
        .collect();
    // And a few real clients.
    let cli: Vec<_> = (0..CLI_FLOOD)
        .map(|_| {
            let host = srv.host();
            thread::spawn(move || {
                let out = tempfile::tempdir().unwrap();
                let started = Instant::now();
                let run = ferry(out.path(), &["get", &host, "small.txt", "-o", "dl/"]);
                (run, files_under(out.path()), started.elapsed())
            })
        })
        .collect();
    let mut waits = Vec::new();
    for t in flood {
        let (frames, took) = t.join().expect("flood thread");
        let codes: Vec<u16> = frames.iter().filter_map(error_code).collect();
        assert_eq!(
            codes,
            vec![ErrorCode::Busy as u16],
            "a flood client was not told busy: {frames:?}"
        );
        assert_eq!(frames.len(), 1, "{frames:?}");
        waits.push(took);
    }
    for t in cli {
        let (run, files, took) = t.join().expect("cli thread");
        let run = run.fails();
        assert!(
            run.stderr.starts_with("ferry: ")
                && run.stderr.contains("server busy")
                && run.stderr.lines().count() == 1,
            "not a clean busy line\n{run}"
        );
        assert!(files.is_empty(), "{files:?}\n{run}");
        waits.push(took);
    }
    assert!(srv.is_running());

    // Release the slots: service resumes (bounded retries, since the server
    // notices a vanished holder on its next write).
    drop(holders);
    let out = tempfile::tempdir().unwrap();
    let mut tries = 0;
    let resumed = wait_until(PATIENCE, Duration::from_millis(50), || {
        tries += 1;
        ferry(out.path(), &["get", &srv.host(), "small.txt", "-q"])
            .status
            .success()
    });
    assert!(resumed, "service did not resume:\n{}", srv.stderr());
    assert_eq!(fs::read(out.path().join("small.txt")).unwrap(), b"small");
    waits.sort();
    eprintln!(
        "FIGURE flood: --max-connections {LIMIT}, {LIMIT} held mid-body; {} of {} newcomers ({RAW_FLOOD} raw \
         native + {CLI_FLOOD} `ferry get`) answered 'server busy' and closed; answer time median {:?}, max {:?}; \
         service resumed after release ({tries} tr{})",
        waits.len(),
        RAW_FLOOD + CLI_FLOOD,
        waits[waits.len() / 2],
        waits[waits.len() - 1],
        if tries == 1 { "y" } else { "ies" }
    );
}
