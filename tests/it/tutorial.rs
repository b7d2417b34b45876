//! Interoperability with the tutorial's raw TCP protocol, both ways, using
//! Python copies of the tutorial's four programs (`tests/tutorial/*.py`,
//! standard library only) and netcat.
//!
//! * the tutorial's downloader and message client against `ferry serve`;
//! * `ferry get --raw` / `ferry say --raw` against the tutorial's servers;
//! * `printf NAME | nc HOST PORT > out` against `ferry serve`.
//!
//! Every wait is bounded: child processes are killed after a deadline and
//! sockets carry read timeouts. Nothing asserts on how long anything took.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

/// How long any one child program may run before it is killed.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// How long to wait for a line of output or a log entry.
const LOG_WAIT: Duration = Duration::from_secs(10);
/// The tutorial's acknowledgement, ferry's default `--ack`.
const ACK: &str = "已收到你的信息";

// ---------------------------------------------------------------- helpers

/// A program in `tests/tutorial/`.
fn tutorial(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/tutorial")
        .join(script)
}

/// `python3 tests/tutorial/SCRIPT ARGS`, UTF-8 output, no bytecode files.
fn python(script: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(tutorial(script))
        .args(args)
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    cmd
}

/// Runs `cmd` to completion, feeding `stdin` (or nothing) and killing it
/// after [`RUN_LIMIT`].
fn run_bounded(cmd: Command, stdin: Option<&[u8]>) -> Run {
    run_bounded_bytes(cmd, stdin).0
}

/// [`run_bounded`], also returning stdout's exact bytes.
fn run_bounded_bytes(mut cmd: Command, stdin: Option<&[u8]>) -> (Run, Vec<u8>) {
    let shown = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e} (is it installed?)"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_LIMIT) {
        Ok(out) => out.expect("wait for child"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let out = rx.recv_timeout(Duration::from_secs(10));
            panic!("{shown} did not finish within {RUN_LIMIT:?}; killed. output: {out:?}");
        }
    };
    let run = Run {
        cmd: shown,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    (run, out.stdout)
}

/// One of the tutorial's servers (`download_server.py`,
/// `message_server.py`) on a loopback port of its choosing; killed on drop.
struct TutorialServer {
    child: Child,
    port: u16,
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
    stderr: Arc<Mutex<String>>,
}

impl TutorialServer {
    fn start(script: &str, args: &[&str]) -> TutorialServer {
        let mut cmd = python(script, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {script}: {e} (is python3 installed?)"));
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        {
            let lines = lines.clone();
            let out = BufReader::new(child.stdout.take().expect("stdout"));
            std::thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    let (v, cv) = &*lines;
                    v.lock().unwrap().push(line);
                    cv.notify_all();
                }
            });
        }
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let mut err = child.stderr.take().expect("stderr");
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                stderr.lock().unwrap().push_str(&s);
            });
        }
        let mut srv = TutorialServer {
            child,
            port: 0,
            lines,
            stderr,
        };
        // The first line is "PORT <n>".
        let found = srv.wait_line(LOG_WAIT, |l| l.starts_with("PORT "));
        srv.port = found
            .as_deref()
            .and_then(|l| l.strip_prefix("PORT "))
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("{script} reported no port: {}", srv.story()));
        srv
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits (bounded) for a stdout line satisfying `pred` and returns it.
    fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let (v, cv) = &*self.lines;
        let deadline = Instant::now() + timeout;
        let mut guard = v.lock().unwrap();
        loop {
            if let Some(l) = guard.iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Asserts that a stdout line satisfying `pred` appears within
    /// [`LOG_WAIT`]; shows the server's output otherwise.
    #[track_caller]
    fn assert_logged(&self, pred: impl Fn(&str) -> bool) {
        assert!(self.wait_line(LOG_WAIT, pred).is_some(), "{}", self.story());
    }

    /// Its output so far, for failure messages.
    fn story(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.lines.0.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for TutorialServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the tutorial's downloader: asks `srv` for `name`, saves into
/// `out_dir/save_as`. Returns what was saved.
fn tutorial_download(srv: &Server, name: &str, out_dir: &Path, save_as: &str) -> Vec<u8> {
    let port = srv.addr.port().to_string();
    let out = out_dir.to_str().expect("UTF-8 temp path");
    let run = run_bounded(
        python(
            "download_client.py",
            &["127.0.0.1", &port, name, out, save_as],
        ),
        None,
    )
    .ok();
    std::fs::read(out_dir.join(save_as))
        .unwrap_or_else(|e| panic!("the tutorial client saved no file ({e}):\n{run}"))
}

/// Connects a plain socket with bounded reads and writes.
fn raw_socket(srv: &Server) -> TcpStream {
    let s = TcpStream::connect(srv.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads exactly `len` bytes (bounded by the socket's read timeout).
fn read_n(s: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)
        .unwrap_or_else(|e| panic!("expected {len} bytes from the server: {e}"));
    buf
}

/// Reads until the server closes; a reset counts as closed. Panics if the
/// read timeout passes first.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("server did not close the connection: {e}"),
        }
    }
}

/// How often `needle` occurs in the server's log, waiting (bounded) until
/// it occurs at least `want` times.
fn wait_log_count(srv: &Server, needle: &str, want: usize) -> usize {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let n = srv.stderr().matches(needle).count();
        if n >= want || Instant::now() >= deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ------------------------------------- the tutorial's clients vs ferry serve

#[test]
fn tutorial_downloader_gets_identical_bytes_from_ferry() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(1024 * 1024 + 3, 7);
    std::fs::write(root.path().join("data.bin"), &data).unwrap();
    let chinese = "中文文件名 测试.txt";
    let text = "你好，世界\n第二行\n".repeat(100);
    std::fs::write(root.path().join(chinese), &text).unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();

    let got = tutorial_download(&srv, "data.bin", out.path(), "data.bin");
    assert!(
        got == data,
        "data.bin differs: {} bytes of {}",
        got.len(),
        data.len()
    );

    let got = tutorial_download(&srv, chinese, out.path(), chinese);
    assert_eq!(String::from_utf8(got).unwrap(), text);
    assert_eq!(
        wait_log_count(&srv, "tutorial GET", 2),
        2,
        "log:\n{}",
        srv.stderr()
    );
}

#[test]
fn tutorial_downloader_saves_empty_file_for_missing_and_log_names_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("here.txt"), "here").unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();

    let missing = "没有这个文件.txt";
    let got = tutorial_download(&srv, missing, out.path(), missing);
    assert!(got.is_empty(), "got {} bytes for a missing file", got.len());
    assert!(
        srv.wait_stderr(LOG_WAIT, "tutorial download failed"),
        "log:\n{}",
        srv.stderr()
    );
    let log = srv.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("tutorial download failed"))
        .unwrap();
    assert!(
        line.contains(missing),
        "the log line should name the file: {line}"
    );
    assert!(line.contains("no such file"), "and say why: {line}");

    // The server is unharmed.
    assert_eq!(
        tutorial_download(&srv, "here.txt", out.path(), "here.txt"),
        b"here"
    );
}

#[test]
fn tutorial_traversal_sends_nothing_and_server_keeps_serving() {
    let top = tempfile::tempdir().unwrap();
    let root = top.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let secret = top.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    std::fs::write(root.join("ok.txt"), "fine").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("escape")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", root.join("escape-rel")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
    let srv = Server::start(&root, &[]);
    let out = tempfile::tempdir().unwrap();

    let attacks = [
        "../secret.txt",
        "/etc/passwd",
        "escape",
        "escape-rel",
        "etc/passwd",
        "sub/../../secret.txt",
        "./../secret.txt",
    ];
    for (i, name) in attacks.iter().enumerate() {
        let got = tutorial_download(&srv, name, out.path(), &format!("attack-{i}"));
        assert!(
            got.is_empty(),
            "{name:?} sent {} bytes: {:?}",
            got.len(),
            String::from_utf8_lossy(&got)
        );
        // And the server still serves after each attempt.
        assert_eq!(
            tutorial_download(&srv, "ok.txt", out.path(), "ok.txt"),
            b"fine"
        );
    }
    assert_eq!(
        wait_log_count(&srv, "tutorial download failed", attacks.len()),
        attacks.len(),
        "each attempt should be logged:\n{}",
        srv.stderr()
    );

    // The same over a bare socket that half-closes, as netcat -N does.
    let mut s = raw_socket(&srv);
    s.write_all(b"../secret.txt").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert!(read_until_closed(&mut s).is_empty());
}

#[test]
fn tutorial_message_client_prints_on_ferry_stdout() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &["--tutorial", "message"]);
    let port = srv.addr.port().to_string();
    for msg in ["hello ferry", "你好，服务器！"] {
        run_bounded(
            python("message_client.py", &["127.0.0.1", &port, msg]),
            None,
        )
        .ok();
        let want = format!(": {msg}");
        assert!(
            srv.wait_stdout(LOG_WAIT, |l| l.starts_with("message from 127.0.0.1:")
                && l.ends_with(&want)),
            "no `message from PEER{want}` line; stdout: {:?}\nlog:\n{}",
            srv.stdout_lines(),
            srv.stderr()
        );
    }
}

#[test]
fn ferry_message_server_acks_each_chunk_and_honours_ack_flag() {
    let root = tempfile::tempdir().unwrap();
    // Default ack, over a bare socket: one ack per chunk.
    let srv = Server::start(root.path(), &["--tutorial", "message"]);
    let mut s = raw_socket(&srv);
    s.write_all("第一条".as_bytes()).unwrap();
    assert_eq!(read_n(&mut s, ACK.len()), ACK.as_bytes());
    s.write_all(b"second").unwrap();
    assert_eq!(read_n(&mut s, ACK.len()), ACK.as_bytes());
    assert!(srv.wait_stdout(LOG_WAIT, |l| l.ends_with(": 第一条")));
    assert!(srv.wait_stdout(LOG_WAIT, |l| l.ends_with(": second")));
    drop(s);

    // A custom ack, seen by ferry's own raw client.
    let srv = Server::start(
        root.path(),
        &["--tutorial", "message", "--ack", "got it 收到"],
    );
    let say = ferry(
        root.path(),
        &["say", "--tutorial", &srv.host(), "ping", "--wait", "10"],
    )
    .ok();
    assert_eq!(say.stdout.trim_end(), "got it 收到", "{say}");
    assert!(srv.wait_stdout(LOG_WAIT, |l| l.ends_with(": ping")));
}

#[test]
fn silent_tutorial_client_is_closed_by_idle_timeout() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("ok.txt"), "fine").unwrap();
    for mode in ["file", "message"] {
        let srv = Server::start(root.path(), &["--idle-timeout", "1", "--tutorial", mode]);
        let mut s = raw_socket(&srv);
        // Sends nothing: the server must close it (the socket's 20 s read
        // timeout bounds the wait and fails the test if it does not).
        assert!(read_until_closed(&mut s).is_empty(), "--tutorial {mode}");
        if mode == "file" {
            let out = tempfile::tempdir().unwrap();
            assert_eq!(
                tutorial_download(&srv, "ok.txt", out.path(), "ok.txt"),
                b"fine"
            );
        }
    }
}

#[test]
fn invalid_utf8_tutorial_message_prints_replacement_chars() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start(root.path(), &["--tutorial", "message"]);
    let mut s = raw_socket(&srv);
    s.write_all(b"caf\xc3(\xff\xfe ok").unwrap();
    assert_eq!(read_n(&mut s, ACK.len()), ACK.as_bytes());
    assert!(
        srv.wait_stdout(LOG_WAIT, |l| l
            .ends_with(": caf\u{fffd}(\u{fffd}\u{fffd} ok")),
        "stdout: {:?}",
        srv.stdout_lines()
    );
    // Control characters cannot forge a line either.
    s.write_all(b"a\x1b[31mred\nfake line").unwrap();
    assert_eq!(read_n(&mut s, ACK.len()), ACK.as_bytes());
    assert!(
        srv.wait_stdout(LOG_WAIT, |l| l.ends_with(": a\\u{1b}[31mred\\nfake line")),
        "stdout: {:?}",
        srv.stdout_lines()
    );
    drop(s);
    // Still serving.
    let port = srv.addr.port().to_string();
    run_bounded(
        python("message_client.py", &["127.0.0.1", &port, "still here"]),
        None,
    )
    .ok();
    assert!(srv.wait_stdout(LOG_WAIT, |l| l.ends_with(": still here")));
}

#[test]
fn tutorial_off_closes_tutorial_clients() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("ok.txt"), "fine").unwrap();
    let srv = Server::start(root.path(), &["--tutorial", "off"]);
    let out = tempfile::tempdir().unwrap();

    let got = tutorial_download(&srv, "ok.txt", out.path(), "ok.txt");
    assert!(got.is_empty(), "--tutorial off served {} bytes", got.len());
    let mut s = raw_socket(&srv);
    s.write_all(b"hello").unwrap();
    assert!(read_until_closed(&mut s).is_empty());
    assert_eq!(
        wait_log_count(&srv, "tutorial client refused (--tutorial off)", 2),
        2,
        "log:\n{}",
        srv.stderr()
    );

    // Native clients are unaffected.
    ferry(out.path(), &["get", &srv.host(), "ok.txt", "-o", "native/"]).ok();
    assert_eq!(
        std::fs::read(out.path().join("native/ok.txt")).unwrap(),
        b"fine"
    );
}

// ------------------------------------ ferry's raw clients vs the tutorial's

#[test]
fn ferry_get_tutorial_from_tutorial_server() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(1024 * 1024 + 5, 11);
    std::fs::write(root.path().join("data.bin"), &data).unwrap();
    let chinese = "报告 2024.bin";
    let cdata = random_bytes(5000, 12);
    std::fs::write(root.path().join(chinese), &cdata).unwrap();
    let py = TutorialServer::start("download_server.py", &[root.path().to_str().unwrap()]);
    let out = tempfile::tempdir().unwrap();

    ferry(
        out.path(),
        &["get", "--tutorial", &py.host(), "data.bin", "-o", "dl/"],
    )
    .ok();
    let got = std::fs::read(out.path().join("dl/data.bin")).unwrap();
    assert!(
        got == data,
        "data.bin differs: {} bytes of {}",
        got.len(),
        data.len()
    );

    ferry(
        out.path(),
        &["get", "--tutorial", &py.host(), chinese, "-o", "dl/"],
    )
    .ok();
    assert_eq!(
        std::fs::read(out.path().join("dl").join(chinese)).unwrap(),
        cdata
    );
    assert_eq!(
        files_under(&out.path().join("dl")),
        vec![PathBuf::from("data.bin"), PathBuf::from(chinese)],
        "no .part left behind"
    );
    // The tutorial's server saw exactly the names, no terminator.
    let want = format!("需要下载的文件是: {chinese}");
    py.assert_logged(|l| l.ends_with(&want));
}

#[test]
fn ferry_get_tutorial_missing_file_fails_and_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let py = TutorialServer::start("download_server.py", &[root.path().to_str().unwrap()]);
    let out = tempfile::tempdir().unwrap();
    for name in ["missing.bin", "不存在.txt"] {
        let run = ferry(
            out.path(),
            &["get", "--tutorial", &py.host(), name, "-o", "dl/"],
        )
        .fails();
        assert!(
            run.stderr.contains(name),
            "the error should name the file:\n{run}"
        );
        assert_eq!(
            files_under(&out.path().join("dl")),
            Vec::<PathBuf>::new(),
            "nothing may be left behind:\n{run}"
        );
    }
    py.assert_logged(|l| l.contains("不存在.txt 下载失败"));
}

#[test]
fn ferry_say_tutorial_to_acking_tutorial_server_prints_ack() {
    let py = TutorialServer::start("message_server.py", &["--ack"]);
    let dir = tempfile::tempdir().unwrap();
    let say = ferry(
        dir.path(),
        &[
            "say",
            "--tutorial",
            &py.host(),
            "你好，教程",
            "--wait",
            "10",
        ],
    )
    .ok();
    assert_eq!(say.stdout.trim_end(), ACK, "{say}");
    py.assert_logged(|l| l == "接收到客户端信息: 你好，教程");

    // No MESSAGE: each stdin line is one message, each acknowledged.
    let say = ferry_with_stdin(
        dir.path(),
        &["say", "--tutorial", &py.host(), "--wait", "10"],
        Some("line one\n第二行\n".as_bytes()),
    )
    .ok();
    assert_eq!(say.stdout, format!("{ACK}\n{ACK}\n"), "{say}");
    for want in ["接收到客户端信息: line one", "接收到客户端信息: 第二行"] {
        py.assert_logged(|l| l == want);
    }
}

#[test]
fn ferry_say_tutorial_to_silent_tutorial_server_prints_nothing_and_succeeds() {
    let py = TutorialServer::start("message_server.py", &[]);
    let dir = tempfile::tempdir().unwrap();
    let say = ferry(
        dir.path(),
        &[
            "say",
            "--tutorial",
            &py.host(),
            "anyone there?",
            "--wait",
            "0.5",
        ],
    )
    .ok();
    assert_eq!(say.stdout, "", "{say}");
    py.assert_logged(|l| l == "接收到客户端信息: anyone there?");

    let say = ferry_with_stdin(
        dir.path(),
        &["say", "--tutorial", &py.host(), "--wait", "0.2"],
        Some(b"a\nb\n"),
    )
    .ok();
    assert_eq!(say.stdout, "", "{say}");
    // Both lines arrive (perhaps in one chunk: the server never answers, so
    // nothing paces them).
    py.assert_logged(|l| l.ends_with('b'));
}

// ---------------------------------------------------------------- netcat

/// The `nc` on PATH, if any.
fn find_nc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nc"))
        .find(|p| p.is_file())
}

/// Flags that make this `nc` finish once the server closes after stdin
/// ends: `-N` (OpenBSD: shut down the socket's write side at EOF, then read
/// until the server closes), else `-q 1` (traditional netcat: quit a second
/// after EOF; enough for a small file), else none (ncat half-closes by
/// default).
fn nc_flags(nc: &Path) -> Vec<&'static str> {
    let help = Command::new(nc)
        .arg("-h")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        })
        .unwrap_or_default();
    let has = |flag: &str| help.lines().any(|l| l.trim_start().starts_with(flag));
    if has("-N") {
        vec!["-N"]
    } else if has("-q") {
        vec!["-q", "1"]
    } else {
        vec![]
    }
}

#[test]
fn netcat_downloads_from_ferry() {
    let Some(nc) = find_nc() else {
        // In CI (and under .ci/run) a missing tool is a failure, never a skip.
        if std::env::var_os("FERRY_REQUIRE_NC").is_some_and(|v| v == "1")
            || std::env::var_os("CI").is_some()
        {
            panic!("nc is not on PATH but this run requires it (FERRY_REQUIRE_NC=1 or CI set)");
        }
        eprintln!("skipping netcat_downloads_from_ferry: nc is not on PATH");
        return;
    };
    let flags = nc_flags(&nc);
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(64 * 1024 + 1, 21);
    std::fs::write(root.path().join("data.bin"), &data).unwrap();
    std::fs::write(root.path().join("说明.txt"), "用 netcat 下载\n").unwrap();
    let srv = Server::start(root.path(), &[]);
    let port = srv.addr.port().to_string();

    // `printf NAME | nc FLAGS 127.0.0.1 PORT > out`, and the `echo NAME |`
    // form whose name ends in a newline.
    for (input, want) in [
        (&b"data.bin"[..], &data[..]),
        ("说明.txt\n".as_bytes(), "用 netcat 下载\n".as_bytes()),
        (&b"data.bin\r\n"[..], &data[..]),
    ] {
        let mut cmd = Command::new(&nc);
        cmd.args(&flags).args(["127.0.0.1", &port]);
        let (run, got) = run_bounded_bytes(cmd, Some(input));
        assert!(
            got == want,
            "nc {flags:?} given {:?}: got {} bytes, want {}\nstatus: {}\nstderr: {}\nserver log:\n{}",
            String::from_utf8_lossy(input),
            got.len(),
            want.len(),
            run.status,
            run.stderr,
            srv.stderr()
        );
    }
}

#[test]
fn ferry_say_tutorial_lines_to_one_shot_tutorial_server_reports_the_close() {
    // The tutorial's first server answers one recv and closes. The first
    // line is acknowledged; the others cannot be delivered, and ferry must
    // say so rather than exit 0 as if they had been (it used to: the
    // socket's EPIPE was taken for a closed stdout pipe).
    let py = TutorialServer::start("message_server.py", &["--once"]);
    let dir = tempfile::tempdir().unwrap();
    let say = ferry_with_stdin(
        dir.path(),
        &["say", "--tutorial", &py.host(), "--wait", "10"],
        Some("first\nsecond\nthird\n".as_bytes()),
    )
    .fails();
    assert_eq!(say.stdout, format!("{ACK}\n"), "{say}");
    assert!(say.stderr.contains("closed the connection"), "{say}");
    py.assert_logged(|l| l == "接收到的数据为: first");
}
