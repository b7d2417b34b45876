//! Test helpers: spawn the real `ferry` binary, find the address it reports,
//! run client commands, and show everything on failure.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ferry::protocol::{Frame, MAGIC};

/// Path of the binary under test: the one this build made, or the one
/// `FERRY_TEST_BIN` names (to check that a regression test fails against
/// an older build, as each one for an issue must).
pub fn ferry_bin() -> String {
    std::env::var("FERRY_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferry").to_string())
}

/// A `ferry serve` process on an ephemeral loopback port, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
    /// The line `ferry serve` started with.
    pub startup: String,
    stdout: Arc<(Mutex<Vec<String>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Serves `root` on 127.0.0.1, port 0, with extra flags.
    pub fn start(root: &Path, extra: &[&str]) -> Server {
        Self::start_on(root, "127.0.0.1", extra)
    }

    /// Serves `root` on `bind` (e.g. "::1"), port 0, with extra flags.
    pub fn start_on(root: &Path, bind: &str, extra: &[&str]) -> Server {
        Self::spawn(Some(root), root, bind, extra, Some("debug"), &[])
    }

    /// Serves `root` on 127.0.0.1 port 0 with extra flags and environment.
    pub fn start_env(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(Some(root), root, "127.0.0.1", extra, Some("debug"), env)
    }

    /// `ferry serve ARGS` run in `cwd` with no directory argument, on
    /// 127.0.0.1 port 0, logging at `rust_log` (`None`: the default level).
    pub fn start_in(cwd: &Path, extra: &[&str], rust_log: Option<&str>) -> Server {
        Self::spawn(None, cwd, "127.0.0.1", extra, rust_log, &[])
    }

    /// Serves `root` on 127.0.0.1 port 0, logging at `rust_log` (`None`:
    /// the default level a user gets).
    pub fn start_logging(root: &Path, extra: &[&str], rust_log: Option<&str>) -> Server {
        Self::spawn(Some(root), root, "127.0.0.1", extra, rust_log, &[])
    }

    fn spawn(
        dir: Option<&Path>,
        cwd: &Path,
        bind: &str,
        extra: &[&str],
        rust_log: Option<&str>,
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(ferry_bin());
        cmd.envs(env.iter().copied());
        cmd.arg("serve");
        if let Some(d) = dir {
            cmd.arg(d);
        }
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(["--bind", bind])
            .args(extra)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match rust_log {
            Some(level) => cmd.env("RUST_LOG", level),
            None => cmd.env_remove("RUST_LOG"),
        };
        let root = dir.unwrap_or(cwd);
        let mut child = cmd.spawn().expect("spawn ferry serve");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("read startup line");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut err = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    stderr
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let addr = parse_addr(&first).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ferry serve did not report an address; stdout: {first:?}, stderr: {}",
                stderr.lock().unwrap()
            )
        });
        let stdout = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        {
            let stdout = stdout.clone();
            std::thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let (lines, cv) = &*stdout;
                    lines.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        Server {
            child: Some(child),
            addr,
            root: root.to_path_buf(),
            startup: first.trim_end().to_string(),
            stdout,
            stderr,
        }
    }

    /// `127.0.0.1:PORT` (or `[::1]:PORT`) for client commands.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Lines the server printed to stdout after its startup line.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.0.lock().unwrap().clone()
    }

    /// What the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded) until some stdout line satisfies `pred`.
    pub fn wait_stdout(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        let (lines, cv) = &*self.stdout;
        let deadline = Instant::now() + timeout;
        let mut guard = lines.lock().unwrap();
        loop {
            if guard.iter().any(|l| pred(l)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits (bounded) until the server's log contains `needle`.
    pub fn wait_stderr(&self, timeout: Duration, needle: &str) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn parse_addr(line: &str) -> Option<SocketAddr> {
    // "ferry: serving DIR on ADDR[ (IPv4 and IPv6)]"
    let after = line.trim_end().rsplit(" on ").next()?;
    after.split_whitespace().next()?.parse().ok()
}

/// The outcome of a ferry client command.
pub struct Run {
    pub cmd: String,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole story unless the command succeeded.
    pub fn ok(self) -> Run {
        assert!(self.status.success(), "command failed:\n{self}");
        self
    }

    /// Panics with the whole story unless the command failed.
    pub fn fails(self) -> Run {
        assert!(
            !self.status.success(),
            "command unexpectedly succeeded:\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nstatus: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.cmd, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `ferry ARGS` in `cwd` with no stdin, bounded to 120 s.
pub fn ferry(cwd: &Path, args: &[&str]) -> Run {
    ferry_with_stdin(cwd, args, None)
}

/// Runs `ferry ARGS` in `cwd` with extra environment variables.
pub fn ferry_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn ferry");
    finish(child, None, format!("ferry {}", args.join(" ")))
}

/// Starts `ferry ARGS` in `cwd` without waiting (stdout and stderr piped):
/// for signalling it mid-download. Collect it with [`finish`].
pub fn ferry_spawn(cwd: &Path, args: &[&str]) -> Child {
    Command::new(ferry_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ferry")
}

/// Sends `signal` (e.g. `"INT"`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// Runs `ferry ARGS` in `cwd`, feeding `stdin` (or none), bounded to 120 s.
pub fn ferry_with_stdin(cwd: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args)
        .current_dir(cwd)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn ferry");
    finish(child, stdin, format!("ferry {}", args.join(" ")))
}

/// Feeds stdin, waits (bounded to 120 s, then kills) and collects output.
pub fn finish(mut child: Child, stdin: Option<&[u8]>, cmd: String) -> Run {
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = s.write_all(&input);
        });
    }
    let pid = child.id();
    let done = Arc::new(Mutex::new(false));
    {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if *done.lock().unwrap() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        });
    }
    let out: Output = child.wait_with_output().expect("wait");
    *done.lock().unwrap() = true;
    Run {
        cmd,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes `data` to `rel` under `root`, creating parent directories.
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(p, data).unwrap();
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Every file (relative path) under `dir`, recursively, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------
// Fault injection (tests/it/faults.rs, tests/it/hostile.rs)

impl Server {
    /// Whether the server process is still running (has not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The server's resident set size in KiB (`VmRSS` in /proc/PID/status).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Sends SIGKILL to `pid` (a child not yet reaped, so the id cannot have
/// been reused). For killing a [`Server`] from another thread while its
/// owner still holds it; the owner reaps it with [`Server::kill`].
pub fn sigkill(pid: u32) {
    use rustix::process::{kill_process, Pid, Signal};
    let pid = Pid::from_raw(pid as i32).expect("non-zero pid");
    let _ = kill_process(pid, Signal::Kill);
}

/// Polls `cond` every `every` until it holds or `timeout` passes; returns
/// whether it held. For conditions outside our control (a file growing in
/// another process) where there is nothing to block on.
pub fn wait_until(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Length of a file, 0 if it does not exist.
pub fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// How a [`Relay`] mistreats the connection it carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayOptions {
    /// Cut both sides once this many bytes went from server to client.
    pub cut_after: Option<u64>,
    /// Forward server → client at most this many bytes per second.
    pub rate: Option<u64>,
    /// Give the upstream socket a small receive buffer, so the server cannot
    /// run far ahead of what the relay forwards (a slow reader).
    pub small_upstream_buffer: bool,
    /// Stop forwarding server → client after this many bytes until
    /// [`Relay::release`]: the transfer provably paused mid-body, the
    /// server at most its socket buffers ahead.
    pub hold_at: Option<u64>,
}

/// What a [`Relay`] saw.
#[derive(Debug, Default)]
pub struct RelayReport {
    /// Bytes forwarded from server to client.
    pub down: u64,
    /// The first bytes the client sent (up to [`RELAY_CAPTURE`]).
    pub up_head: Vec<u8>,
    /// The first bytes the server sent (up to [`RELAY_CAPTURE`]).
    pub down_head: Vec<u8>,
}

/// How many leading bytes of each direction a [`Relay`] keeps.
pub const RELAY_CAPTURE: usize = 512;

/// A one-connection TCP relay between a client and `upstream` that can
/// throttle, cut after N bytes, or be cut on demand ([`Relay::cut`]): a
/// slow or failing network in the middle of a transfer.
pub struct Relay {
    pub addr: SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    released: Arc<std::sync::atomic::AtomicBool>,
    up: Arc<std::sync::atomic::AtomicU64>,
    down: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<RelayReport>>,
}

impl Relay {
    /// Listens on 127.0.0.1, port 0, for one client (accepted within 30 s).
    pub fn start(upstream: SocketAddr, opts: RelayOptions) -> Relay {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        const PATIENCE: Duration = Duration::from_secs(30);
        // No relay outlives this, whatever the peers do.
        const LIFETIME: Duration = Duration::from_secs(120);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let released = Arc::new(AtomicBool::new(false));
        let (cut2, up2, down2) = (cut.clone(), up.clone(), down.clone());
        let released2 = released.clone();
        let thread = std::thread::spawn(move || {
            let mut report = RelayReport::default();
            let started = Instant::now();
            let client = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if started.elapsed() > PATIENCE || cut2.load(Ordering::SeqCst) {
                            return report;
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => return report,
                }
            };
            client.set_nonblocking(false).unwrap();
            let server = {
                use socket2::{Domain, Socket, Type};
                let s = Socket::new(Domain::for_address(upstream), Type::STREAM, None).unwrap();
                if opts.small_upstream_buffer {
                    s.set_recv_buffer_size(64 * 1024).unwrap();
                }
                match s.connect_timeout(&upstream.into(), PATIENCE) {
                    Ok(()) => TcpStream::from(s),
                    Err(_) => {
                        let _ = client.shutdown(Shutdown::Both);
                        return report;
                    }
                }
            };
            client.set_write_timeout(Some(PATIENCE)).unwrap();
            server.set_write_timeout(Some(PATIENCE)).unwrap();
            client.set_read_timeout(Some(LIFETIME)).unwrap();
            // Short, so the loop below notices a cut promptly.
            server
                .set_read_timeout(Some(Duration::from_millis(20)))
                .unwrap();

            // Client → server, unthrottled, until the client closes.
            let mut c_in = client.try_clone().unwrap();
            let mut s_out = server.try_clone().unwrap();
            let upward = std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = c_in.read(&mut buf) {
                    if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let keep = n.min(RELAY_CAPTURE.saturating_sub(head.len()));
                    head.extend_from_slice(&buf[..keep]);
                    up2.fetch_add(n as u64, Ordering::SeqCst);
                }
                let _ = s_out.shutdown(Shutdown::Write);
                head
            });

            // Server → client: throttled, cut where asked.
            let (mut s_in, mut c_out) = (&server, &client);
            let mut buf = [0u8; 16 * 1024];
            let t0 = Instant::now();
            let mut forwarded = 0u64;
            loop {
                if cut2.load(Ordering::SeqCst) || t0.elapsed() > LIFETIME {
                    break;
                }
                let mut want = buf.len();
                if let Some(hold) = opts.hold_at {
                    if !released2.load(Ordering::SeqCst) {
                        if forwarded >= hold {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        }
                        want = want.min(usize::try_from(hold - forwarded).unwrap_or(usize::MAX));
                    }
                }
                if let Some(limit) = opts.cut_after {
                    if forwarded >= limit {
                        break;
                    }
                    want = want.min(usize::try_from(limit - forwarded).unwrap_or(usize::MAX));
                }
                match s_in.read(&mut buf[..want]) {
                    Ok(0) => break,
                    Ok(n) => {
                        if c_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        let keep = n.min(RELAY_CAPTURE.saturating_sub(report.down_head.len()));
                        report.down_head.extend_from_slice(&buf[..keep]);
                        forwarded += n as u64;
                        down2.store(forwarded, Ordering::SeqCst);
                        if let Some(rate) = opts.rate {
                            let due = Duration::from_secs_f64(forwarded as f64 / rate as f64);
                            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            // The cut (or the server's end): both connections end here.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            report.up_head = upward.join().unwrap_or_default();
            report.down = forwarded;
            report
        });
        Relay {
            addr,
            cut,
            released,
            up,
            down,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` for client commands.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Cuts both connections now (or makes the relay refuse its client).
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets a relay started with `hold_at` forward the rest.
    pub fn release(&self) {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Bytes the client has sent so far.
    pub fn up_bytes(&self) -> u64 {
        self.up.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes forwarded to the client so far.
    pub fn down_bytes(&self) -> u64 {
        self.down.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the relay to finish and returns what it saw.
    pub fn join(mut self) -> RelayReport {
        self.thread
            .take()
            .expect("joined once")
            .join()
            .expect("relay thread")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.cut();
            let _ = t.join();
        }
    }
}

/// The frames at the start of a captured native byte stream (after its
/// magic), as far as they are complete. Empty if the magic is not there.
pub fn frames_in(head: &[u8]) -> Vec<Frame> {
    let Some(mut rest) = head.strip_prefix(&MAGIC[..]) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Ok(Some((frame, used))) = Frame::parse(rest) {
        // A body follows a header: its bytes are no frames, so stop there.
        let header = matches!(frame, Frame::FileHeader(_));
        out.push(frame);
        rest = &rest[used..];
        if header {
            break;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A hand-driven native connection

/// Bound on connecting and on every write of a [`Wire`].
const WIRE_PATIENCE: Duration = Duration::from_secs(30);

/// Magic and a version 1 `Hello` with no capabilities: how every native
/// client opens.
pub fn hello() -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    Frame::Hello {
        version: 1,
        caps: 0,
        token: None,
    }
    .encode(&mut v);
    v
}

/// A hand-driven native connection over a blocking std socket, for clients
/// the `ferry` binary would never be: silent, stalled, pipelining, hostile.
/// Connecting and every write are bounded by 30 s, every read by the bound
/// given to [`Wire::connect`]; a read that times out panics the test.
pub struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
    read_bound: Duration,
}

/// How a [`Wire`] read ended when it did not yield what was asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// Orderly end of stream.
    Eof,
    /// The peer reset the connection.
    Reset,
}

impl Wire {
    /// Connects to `addr`; every read then waits at most `read_bound`.
    pub fn connect(addr: SocketAddr, read_bound: Duration) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WIRE_PATIENCE).expect("connect");
        stream.set_read_timeout(Some(read_bound)).unwrap();
        stream.set_write_timeout(Some(WIRE_PATIENCE)).unwrap();
        Wire {
            stream,
            buf: Vec::new(),
            read_bound,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    /// Sends bytes; panics if the server does not take them.
    pub fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).expect("send to server");
    }

    /// Sends bytes; a server that already closed may refuse them, which
    /// some tests expect, so failures are returned, not panicked on.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Shuts down our sending side: the server reads end of stream.
    pub fn half_close(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    /// One read into the buffer. `Err` when the connection is closed; panics
    /// when nothing arrives within the read bound (a hang).
    fn fill(&mut self) -> Result<(), Closed> {
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Closed::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                Err(Closed::Reset)
            }
            Err(e) => panic!(
                "no answer from the server within {:?}: {e}",
                self.read_bound
            ),
        }
    }

    /// The server's magic; panics if it sends other bytes.
    pub fn read_magic(&mut self) -> Result<(), Closed> {
        while self.buf.len() < MAGIC.len() {
            self.fill()?;
        }
        assert_eq!(self.buf[..MAGIC.len()], MAGIC, "server magic");
        self.buf.drain(..MAGIC.len());
        Ok(())
    }

    /// The next frame, or how the connection closed.
    pub fn read_frame(&mut self) -> Result<Frame, Closed> {
        // Bounded: each round parses or consumes one read, and a frame is
        // at most 64 KiB.
        for _ in 0..100_000 {
            if let Some((frame, used)) = Frame::parse(&self.buf).expect("valid frame from server") {
                self.buf.drain(..used);
                return Ok(frame);
            }
            self.fill()?;
        }
        panic!("no complete frame after many reads");
    }

    /// The next frame; panics, naming `what` was awaited, if the
    /// connection closes first.
    pub fn expect_frame(&mut self, what: &str) -> Frame {
        self.read_frame()
            .unwrap_or_else(|c| panic!("connection closed ({c:?}) while waiting for {what}"))
    }

    /// Exactly `n` raw body bytes.
    pub fn read_body(&mut self, n: usize) -> Result<Vec<u8>, Closed> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Every byte until the server closes (bounded per read).
    pub fn read_to_close(&mut self) -> (Vec<u8>, Closed) {
        for _ in 0..1_000_000 {
            if let Err(c) = self.fill() {
                return (std::mem::take(&mut self.buf), c);
            }
        }
        panic!("server kept sending");
    }

    /// Frames until the server closes (after its magic, if it sent one);
    /// returns them and how it closed.
    pub fn frames_until_closed(&mut self) -> (Vec<Frame>, Closed) {
        let mut frames = Vec::new();
        for _ in 0..10_000 {
            match self.read_frame() {
                Ok(f) => frames.push(f),
                Err(c) => return (frames, c),
            }
        }
        panic!("server kept sending frames: {frames:?}");
    }

    /// Magic and Hello out; then checks the server's magic and a version 1
    /// Welcome with no capabilities.
    pub fn handshake(&mut self) {
        self.send(&hello());
        self.read_magic().expect("server closed before its magic");
        match self.expect_frame("Welcome") {
            Frame::Welcome {
                version: 1,
                caps: 0,
            } => {}
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

/// Creates a sparse 256 MiB file, far larger than any socket buffers, so a
/// client that stops reading keeps the server busy sending it.
pub fn huge_sparse(root: &Path, name: &str) {
    let f = std::fs::File::create(root.join(name)).unwrap();
    f.set_len(256 << 20).unwrap();
}

/// A native connection that asks for `name`, reads only the FileHeader and
/// the first body byte, then stops reading: the server is provably
/// mid-body, busy, so never evictable. Each read waits at most `read_bound`.
pub fn stalled_download(srv: &Server, name: &str, read_bound: Duration) -> Wire {
    let mut w = Wire::connect(srv.addr, read_bound);
    let mut bytes = hello();
    Frame::Get(ferry::protocol::GetRequest {
        path: name.as_bytes().to_vec(),
        offset: 0,
        length: None,
        if_unchanged: None,
    })
    .encode(&mut bytes);
    w.send(&bytes);
    w.read_magic().expect("server closed before its magic");
    assert!(matches!(w.expect_frame("Welcome"), Frame::Welcome { .. }));
    assert!(matches!(w.expect_frame("FileHeader"), Frame::FileHeader(_)));
    w.read_body(1).expect("server closed inside a body");
    w
}

// ---------------------------------------------------------------------------
// A scripted (hostile) native server, and a throttling proxy

/// What a [`FakeServer`]'s handler wants after answering a request.
pub enum Flow {
    /// Send what was written and read the next request.
    Continue,
    /// Send what was written, then close the connection.
    Close,
}

/// A native ferry server played by the test: it exchanges hellos, then
/// hands every request to `handler`, which writes the answer itself
/// (anything at all, valid or not, as much as it likes) to the stream it
/// is given. It serves up to `conns` connections, one after another, each
/// bounded to 60 s.
pub struct FakeServer {
    pub addr: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeServer {
    pub fn start<F>(conns: usize, mut handler: F) -> FakeServer
    where
        F: FnMut(Frame, &mut TcpStream) -> io::Result<Flow> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut served = 0;
            while served < conns && started.elapsed() < Duration::from_secs(60) {
                let s = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => return,
                };
                served += 1;
                let _ = Self::serve_one(s, &mut handler);
            }
        });
        FakeServer {
            addr,
            thread: Some(thread),
        }
    }

    fn serve_one<F>(mut s: TcpStream, handler: &mut F) -> io::Result<()>
    where
        F: FnMut(Frame, &mut TcpStream) -> io::Result<Flow>,
    {
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        let mut greeted = false;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if !greeted && buf.len() >= MAGIC.len() {
                buf.drain(..MAGIC.len());
                greeted = true;
            }
            let parsed = if greeted {
                Frame::parse(&buf).ok().flatten()
            } else {
                None
            };
            let Some((frame, used)) = parsed else {
                match s.read(&mut chunk)? {
                    0 => return Ok(()),
                    n => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            buf.drain(..used);
            let flow = match frame {
                Frame::Hello { .. } => {
                    let mut out = MAGIC.to_vec();
                    Frame::Welcome {
                        version: 1,
                        caps: 0,
                    }
                    .encode(&mut out);
                    s.write_all(&out)?;
                    Flow::Continue
                }
                other => handler(other, &mut s)?,
            };
            if let Flow::Close = flow {
                let _ = s.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
        Ok(())
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Waits for the server thread (it ends once its connections are served
    /// or its time is up).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes `frames` to `s` in one write.
pub fn send_frames(s: &mut TcpStream, frames: &[Frame]) -> io::Result<()> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    s.write_all(&out)
}

/// A TCP proxy in front of `upstream` that forwards server → client at
/// most `rate` bytes per second per connection, for any number of
/// connections, until dropped (or 120 s): a slow link, so a download is
/// provably in the middle when the test interrupts it.
pub struct SlowProxy {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Bytes forwarded server → client, per connection in accept order.
    down: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl SlowProxy {
    pub fn start(upstream: SocketAddr, rate: u64) -> SlowProxy {
        Self::start_rates(upstream, move |_| Some(rate))
    }

    /// As [`SlowProxy::start`], the `k`-th connection accepted (from 0)
    /// forwarded at `rate_of(k)` bytes per second, or unthrottled for `None`.
    pub fn start_rates(
        upstream: SocketAddr,
        rate_of: impl Fn(usize) -> Option<u64> + Send + 'static,
    ) -> SlowProxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let down = Arc::new(std::sync::Mutex::new(Vec::new()));
        let down2 = down.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop2.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(120) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    Err(_) => return,
                };
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(10))
                else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let stop3 = stop2.clone();
                let (k, counts) = {
                    let mut d = down2.lock().unwrap();
                    d.push(0);
                    (d.len() - 1, down2.clone())
                };
                let rate = rate_of(k);
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = c_in.read(&mut buf) {
                        if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_out.shutdown(Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let (mut s_in, mut c_out) = (server, client);
                    let _ = s_in.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut buf = [0u8; 4096];
                    let t0 = Instant::now();
                    let mut sent = 0u64;
                    while !stop3.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(120) {
                        match s_in.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                sent += n as u64;
                                counts.lock().unwrap()[k] = sent;
                                let Some(rate) = rate else { continue };
                                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                    std::thread::sleep(wait);
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = c_out.shutdown(Shutdown::Both);
                    let _ = s_in.shutdown(Shutdown::Both);
                });
            }
        });
        SlowProxy { addr, stop, down }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Bytes forwarded to the client so far, per connection in accept order.
    pub fn down(&self) -> Vec<u64> {
        self.down.lock().unwrap().clone()
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Panics unless every character of `text` is safe for a terminal (line
/// ends aside): no escape sequence, C1 control, bidi override or
/// zero-width character from a peer got through.
pub fn assert_terminal_safe(text: &str, context: &dyn std::fmt::Display) {
    for (i, c) in text.char_indices() {
        if c != '\n' && ferry::display::is_unsafe_char(c) {
            panic!(
                "unsafe character {:?} (U+{:04X}) reached the terminal at byte {i}:\n{context}",
                c, c as u32
            );
        }
    }
}

/// The peak resident memory of `child` while it runs, sampled every 20 ms
/// from /proc (KiB), and its outcome.
pub fn finish_measuring_rss(child: Child, cmd: String) -> (Run, u64) {
    let pid = child.id();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    for key in ["VmHWM:", "VmRSS:"] {
                        if let Some(kib) = st
                            .lines()
                            .find_map(|l| l.strip_prefix(key))
                            .and_then(|v| v.split_whitespace().next())
                            .and_then(|v| v.parse::<u64>().ok())
                        {
                            peak.fetch_max(kib, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let run = finish(child, None, cmd);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = sampler.join();
    (run, peak.load(std::sync::atomic::Ordering::SeqCst))
}

/// Bytes the process `pid` has read through read(2)-like calls so far
/// (`rchar` in /proc/PID/io).
pub fn bytes_read_by(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("rchar:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .expect("/proc/PID/io")
}

/// The path of an external tool the test needs (curl, wget, chromium), or
/// `None` to skip, saying so, where it is not installed. Under CI (`CI`
/// set) or `FERRY_REQUIRE_TOOLS=1` (what `.ci/run` sets after installing
/// them) a missing tool fails the test instead: it never skips there.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(name, "");
    }
    found
}

/// A tool this test needs is not installed: fails the test where the run
/// requires every tool (CI, `FERRY_REQUIRE_TOOLS=1`), else says it skips.
pub fn missing(name: &str, how: &str) {
    let required = std::env::var_os("CI").is_some()
        || std::env::var_os("FERRY_REQUIRE_TOOLS").is_some_and(|v| v == "1");
    assert!(
        !required,
        "{name} is not installed but this run requires it{how}"
    );
    eprintln!("skipping: {name} is not installed");
}

/// A `ferry get --retry` that lost its node: it reconnected, resumed and
/// verified.
pub fn assert_reconnected_and_resumed(run: &Run) {
    assert!(run.status.success(), "{run}");
    assert!(
        run.stderr.contains("reconnecting in"),
        "no reconnect:\n{run}"
    );
    assert!(run.stderr.contains("resumed at"), "no resume:\n{run}");
    assert!(run.stderr.contains("verified"), "{run}");
}

/// What `curl -sS -o /dev/null -w FORMAT ARGS...` prints, failing if curl
/// itself fails.
pub fn curl_writes(cwd: &Path, curl: &Path, format: &str, args: &[&str]) -> String {
    let mut all = vec!["-sS", "-o", "/dev/null", "-w", format];
    all.extend(args);
    run_tool(cwd, curl, &all).ok().stdout
}

/// Runs a program (not ferry) in `cwd`, bounded to 120 s.
pub fn run_tool(cwd: &Path, program: &Path, args: &[&str]) -> Run {
    let child = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    finish(
        child,
        None,
        format!("{} {}", program.display(), args.join(" ")),
    )
}

/// The range progress a `.part.meta` records, in bytes done (`None`: no
/// meta, or no ranges in it).
pub fn recorded_progress(meta: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(meta).ok()?;
    let ranges = text.lines().find_map(|l| l.strip_prefix("ranges="))?;
    Some(
        ranges
            .split(',')
            .filter_map(|r| r.split_once(':')?.1.parse::<u64>().ok())
            .sum(),
    )
}

/// A real HAProxy (Debian's package) in TCP mode on a free loopback port,
/// in front of `nodes`, health-checking them (`GET /_ferry/health`) every
/// 200 ms; killed with its process group on drop.
pub struct Haproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Its process group: HAProxy may run workers of its own.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Haproxy {
    /// Starts it and waits until every node is up; `server_opts` go on
    /// each `server` line (`send-proxy-v2 check-send-proxy`, say).
    pub fn start(bin: &Path, nodes: &[SocketAddr], server_opts: &str) -> Haproxy {
        use std::os::unix::process::CommandExt;
        // HAProxy cannot report a port it chose: take a free one.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    server n{i} {a} check {server_opts}\n"))
            .collect();
        let cfg = format!(
            "global\n    stats socket {sock} mode 600 level admin\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 60s\n    \
             timeout server 60s\n    retries 3\n    option redispatch\n\
             frontend ferry\n    bind 127.0.0.1:{port}\n    default_backend nodes\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /_ferry/health\n    \
             http-check expect status 200\n    default-server inter 200ms fall 2 rise 2\n{servers}",
            sock = dir.path().join("stats.sock").display()
        );
        let cfg_path = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start haproxy");
        let hp = Haproxy { child, port, dir };
        let up = wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            hp.statuses().iter().filter(|s| s.as_str() == "UP").count() == nodes.len()
        });
        assert!(up, "HAProxy never saw every node up: {:?}", hp.statuses());
        hp
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `show stat` on the stats socket: the rows of backend `nodes`.
    pub fn stat_rows(&self) -> Vec<Vec<String>> {
        haproxy_stat_rows(&self.dir.path().join("stats.sock"))
    }

    /// Each node's status as HAProxy sees it (`UP`, `DOWN`...), in order.
    pub fn statuses(&self) -> Vec<String> {
        // `show stat` columns: pxname, svname, ..., status is the 18th.
        self.stat_rows()
            .into_iter()
            .map(|r| r.get(17).cloned().unwrap_or_default())
            .collect()
    }

    /// Each node's current sessions (what it is serving now).
    pub fn sessions(&self) -> Vec<u64> {
        self.stat_rows()
            .into_iter()
            .map(|r| r.get(4).and_then(|v| v.parse().ok()).unwrap_or(0))
            .collect()
    }
}

/// A real single-node Garage (the S3-compatible object store) on
/// loopback, started by `deploy/garage.sh` in a directory of its own and
/// stopped on drop. Its bucket `ferry` is empty at first.
pub struct Garage {
    dir: tempfile::TempDir,
    /// The `AWS_*` variables of its key and endpoint (from `DIR/env`).
    pub env: Vec<(String, String)>,
}

/// `deploy/garage.sh` of this checkout.
fn garage_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/garage.sh")
}

impl Garage {
    /// Starts one, or returns `None` (skipping) when Garage is not
    /// installed and this run does not require it; CI requires it
    /// (`.ci/run` installs it with `deploy/garage.sh install`).
    pub fn start() -> Option<Garage> {
        // Where deploy/garage.sh looks: GARAGE_BIN, PATH, ~/.cargo/bin.
        let home_bin = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
            .map(|c| c.join("bin/garage"));
        let installed = std::env::var_os("GARAGE_BIN").is_some()
            || std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|d| d.join("garage").is_file())
            })
            || home_bin.is_some_and(|p| p.is_file());
        if !installed {
            missing("garage", " (bash deploy/garage.sh install)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(garage_script())
            .arg("start")
            .arg(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/garage.sh");
        assert!(
            out.status.success(),
            "deploy/garage.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.path().join("env")).expect("garage env");
        let env = text
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Garage { dir, env })
    }

    /// One of its variables.
    pub fn var(&self, name: &str) -> String {
        self.client().var(name)
    }

    /// The variables as `(&str, &str)` pairs, for [`Server::start_url`].
    pub fn env_pairs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// Stops the store (its data stays until drop).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(garage_script())
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
    }

    /// SIGKILLs the store: no graceful end for requests in flight.
    pub fn kill(&self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("garage.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                // Not our child (garage.sh started it): kill(1), then wait
                // for it to be gone.
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                let gone = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                    !Path::new(&format!("/proc/{pid}")).exists()
                        || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                            .is_ok_and(|s| s.contains(") Z "))
                });
                assert!(gone, "garage {pid} survived SIGKILL");
            }
        }
    }

    /// Starts it again after [`Garage::stop`] or [`Garage::kill`]: same
    /// ports, keys and data.
    pub fn restart(&self) {
        let out = Command::new("bash")
            .arg(garage_script())
            .arg("start")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run deploy/garage.sh");
        assert!(
            out.status.success(),
            "deploy/garage.sh start (again) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A client of its bucket.
    pub fn client(&self) -> S3Client {
        S3Client(self.env.clone())
    }

    /// `rclone ARGS` against it (see [`S3Client::rclone`]).
    pub fn rclone(&self, args: &[&str]) -> String {
        self.client().rclone(args)
    }

    /// Uploads `data` as `key` of the bucket (with rclone).
    pub fn put(&self, key: &str, data: &[u8]) {
        self.client().put(key, data);
    }
}

/// rclone (Debian's package: a standard S3 client, not ferry) for a store
/// whose `AWS_*` variables these are.
pub struct S3Client(pub Vec<(String, String)>);

impl S3Client {
    /// One of the variables.
    pub fn var(&self, name: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// `rclone ARGS` (Debian's package: a standard S3 client, not ferry)
    /// against the store as the remote `g:`; fails the test if it fails.
    pub fn rclone(&self, args: &[&str]) -> String {
        let rclone = tool("rclone").expect("rclone is not installed");
        let out = Command::new(rclone)
            .args(args)
            .env_remove("AWS_CA_BUNDLE") // rclone 1.60 fails every call with it set
            .env("RCLONE_CONFIG_G_TYPE", "s3")
            .env("RCLONE_CONFIG_G_PROVIDER", "Other")
            .env(
                "RCLONE_CONFIG_G_ACCESS_KEY_ID",
                self.var("AWS_ACCESS_KEY_ID"),
            )
            .env(
                "RCLONE_CONFIG_G_SECRET_ACCESS_KEY",
                self.var("AWS_SECRET_ACCESS_KEY"),
            )
            .env("RCLONE_CONFIG_G_REGION", self.var("AWS_REGION"))
            .env("RCLONE_CONFIG_G_ENDPOINT", self.var("AWS_ENDPOINT_URL"))
            .env("RCLONE_CONFIG_G_FORCE_PATH_STYLE", "true")
            .stdin(Stdio::null())
            .output()
            .expect("run rclone");
        assert!(
            out.status.success(),
            "rclone {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Uploads `data` as `key` of the bucket (with rclone).
    pub fn put(&self, key: &str, data: &[u8]) {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), data).unwrap();
        self.rclone(&[
            "copyto",
            &tmp.path().display().to_string(),
            &format!("g:ferry/{key}"),
        ]);
    }
}

impl S3Client {
    /// PUTs `data` under `key` exactly as written (`..`, `//` and all),
    /// with curl's own SigV4 signing: keys no ordinary client would make.
    pub fn put_raw_key(&self, key: &str, data: &[u8]) {
        let curl = tool("curl").expect("curl is not installed");
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(tmp.path(), data).unwrap();
        let sigv4 = format!("aws:amz:{}:s3", self.var("AWS_REGION"));
        let user = format!(
            "{}:{}",
            self.var("AWS_ACCESS_KEY_ID"),
            self.var("AWS_SECRET_ACCESS_KEY")
        );
        let file = tmp.path().display().to_string();
        let url = format!("{}/ferry/{key}", self.var("AWS_ENDPOINT_URL"));
        #[rustfmt::skip]
        let args = [
            "--path-as-is", "--aws-sigv4", &sigv4, "--user", &user,
            // Garage wants the payload hash header, which curl 7.88 omits.
            "-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-T", &file, &url,
        ];
        let code = curl_writes(
            tmp.path().parent().unwrap_or(Path::new("/")),
            &curl,
            "%{http_code}",
            &args,
        );
        assert_eq!(code, "200", "PUT {key} with curl --aws-sigv4");
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    /// `ferry serve URL` (an `s3://` address) on 127.0.0.1 port 0, run in
    /// `cwd` with `env`, logging at `ferry=debug`.
    pub fn start_url(url: &str, cwd: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(
            Some(Path::new(url)),
            cwd,
            "127.0.0.1",
            extra,
            Some("ferry=debug"),
            env,
        )
    }
}

/// `show stat` on an HAProxy stats socket: the rows of backend `nodes`
/// (empty if it cannot be read).
pub fn haproxy_stat_rows(sock: &Path) -> Vec<Vec<String>> {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"show stat\n").is_err() {
        return Vec::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .filter(|l| l.starts_with("nodes,n"))
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}
