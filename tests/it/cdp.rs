//! A headless Chromium driven through the DevTools protocol (CDP), for
//! tests that click, pick files and read the live page: Chromium listens
//! on a port it chooses (`--remote-debugging-port=0`, written to
//! `DevToolsActivePort` in its profile), and we talk JSON to its page
//! over a WebSocket (tungstenite). Every wait is bounded.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Chromium's flags for a headless run on this machine: no sandbox (tests
/// run as root), no GPU, and none of the background traffic a closed
/// network refuses.
pub fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// A running Chromium with one page, and the page's DevTools session.
pub struct Chrome {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    log: PathBuf,
}

/// A body by `GET` from Chromium's DevTools HTTP endpoint (it may keep
/// the connection open: read by `Content-Length`).
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 16384];
    for _ in 0..10_000 {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })?;
            if body.len() >= len {
                return Some(body[..len].to_string());
            }
        }
    }
    None
}

impl Chrome {
    /// Starts Chromium on `url` with its profile and log under `work`.
    pub fn open(chromium: &Path, url: &str, work: &Path) -> Chrome {
        let profile = work.join("cdp-profile");
        let log = work.join("chromium.log");
        let mut args = chromium_args(&profile);
        args.extend(["--remote-debugging-port=0".to_string(), url.to_string()]);
        // Its own process group: the renderers go with it.
        let child = Command::new(chromium)
            .process_group(0)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("chromium starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port_file = profile.join("DevToolsActivePort");
        let ws_url = loop {
            if Instant::now() >= deadline {
                // Not left running: a failed test must not leak a browser.
                kill_group(&child);
                panic!(
                    "chromium gave no DevTools page within 60 s:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
            let Some(port) = fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            else {
                continue;
            };
            let pages: Value = match http_get(port, "/json/list").map(|b| serde_json::from_str(&b))
            {
                Some(Ok(v)) => v,
                _ => continue,
            };
            let found = pages.as_array().and_then(|ps| {
                ps.iter()
                    .find(|p| p["type"] == "page")
                    .and_then(|p| p["webSocketDebuggerUrl"].as_str().map(str::to_string))
            });
            if let Some(u) = found {
                break u;
            }
        };
        let hostport = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let Ok(stream) = TcpStream::connect(&hostport) else {
            kill_group(&child);
            panic!("cannot reach chromium's DevTools at {hostport}");
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let Ok((ws, _)) = tungstenite::client(ws_url.as_str(), stream) else {
            kill_group(&child);
            panic!("no DevTools WebSocket at {ws_url}");
        };
        Chrome {
            child,
            ws,
            next_id: 1,
            log,
        }
    }

    /// Calls a CDP method; its `result`, or the protocol's error message.
    pub fn try_call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::text(msg))
            .map_err(|e| e.to_string())?;
        // Events arrive in between; a page's are few, this bounds them.
        for _ in 0..100_000 {
            let m = self.ws.read().map_err(|e| format!("{method}: {e}"))?;
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
            if v["id"].as_u64() == Some(id) {
                return match v.get("error") {
                    Some(e) => Err(format!("{method}: {e}")),
                    None => Ok(v["result"].clone()),
                };
            }
        }
        Err(format!("{method}: no answer among 100000 messages"))
    }

    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Evaluates `expr` in the page; its value, or `Err` while the page is
    /// (re)loading or the script threw.
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.try_call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        )?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(e.to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` (every 100 ms, at most `secs`) until it gives a
    /// non-empty string; returns it.
    pub fn wait_for(&mut self, expr: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.eval(expr) {
                Ok(Value::String(s)) if !s.is_empty() => return s,
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "waited {secs} s for {expr}; last: {last}\n{}",
            self.log_text()
        );
    }

    /// Chromium's own log so far (console errors, policy violations).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Kills chromium and its renderers (its own process group).
fn kill_group(child: &Child) {
    if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::Kill);
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        kill_group(&self.child);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
