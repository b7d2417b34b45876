//! Test helpers: spawn the real `ferry` binary, find the address it reports,
//! run client commands, and show everything on failure.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Path of the built binary.
pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A `ferry serve` process on an ephemeral loopback port, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub root: PathBuf,
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
        let mut cmd = Command::new(ferry_bin());
        cmd.arg("serve")
            .arg(root)
            .args(["--port", "0", "--bind", bind])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
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

fn parse_addr(line: &str) -> Option<SocketAddr> {
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
        use std::io::Write;
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
