//! Issue 14, point 2: stateless nodes behind a real HAProxy (Debian's
//! package) in TCP mode, one port for every protocol; its health checks
//! (`GET /_ferry/health`, HTTP/1.0 without Host) take a node whose storage
//! is gone out of rotation; a node killed mid-download costs the client a
//! reconnect (`--retry`) and a resume on the other node, verified.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(60);

/// `n` nodes, each serving its own copy of the same files (as nodes over
/// one store would), logging what they serve.
fn nodes(tmp: &Path, n: usize, files: &[(&str, &[u8])], extra: &[&str]) -> Vec<(Server, PathBuf)> {
    (0..n)
        .map(|i| {
            let root = tmp.join(format!("node{i}"));
            for (name, data) in files {
                write_file(&root, name, data);
            }
            (
                Server::start_logging(&root, extra, Some("ferry=info")),
                root,
            )
        })
        .collect()
}

/// Two nodes serving a sparse `big.bin` of `len` bytes and `small.txt`.
/// Their copies have the same size and mtime (the native resume
/// validator), as replicas made with `rsync -t` or one shared store have.
fn sparse_nodes(tmp: &Path, len: u64, extra: &[&str]) -> Vec<(Server, PathBuf)> {
    (0..2)
        .map(|i| {
            let root = tmp.join(format!("node{i}"));
            write_file(&root, "small.txt", b"small\n");
            let f = fs::File::create(root.join("big.bin")).unwrap();
            f.set_len(len).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
                .unwrap();
            (
                Server::start_logging(&root, extra, Some("ferry=info")),
                root,
            )
        })
        .collect()
}

#[test]
fn behind_haproxy_every_protocol_gets_the_same_bytes_and_a_sick_node_leaves() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let Some(curl) = tool("curl") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 140);
    let nodes = nodes(tmp.path(), 2, &[("a.bin", &data)], &[]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(s, _)| s.addr).collect();
    let hp = Haproxy::start(&haproxy, &addrs, "");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    // Round robin: four of each reach both nodes.
    for i in 0..4 {
        let native = format!("native{i}.bin");
        ferry(&out, &["get", &hp.host(), "a.bin", "-o", &native, "-q"]).ok();
        assert_eq!(fs::read(out.join(&native)).unwrap(), data, "native {i}");
        let http = out.join(format!("http{i}.bin"));
        let st = Command::new(&curl)
            .args(["-sSf", "--max-time", "30", "-o"])
            .arg(&http)
            .arg(format!("http://{}/a.bin", hp.host()))
            .status()
            .unwrap();
        assert!(st.success(), "curl {i}");
        assert_eq!(fs::read(&http).unwrap(), data, "http {i}");
        let tut = format!("tutorial{i}.bin");
        ferry(
            &out,
            &["get", "--tutorial", &hp.host(), "a.bin", "-o", &tut, "-q"],
        )
        .ok();
        assert_eq!(fs::read(out.join(&tut)).unwrap(), data, "tutorial {i}");
    }
    for (i, (srv, _)) in nodes.iter().enumerate() {
        assert!(
            srv.stderr().contains("path=a.bin"),
            "node {i} served nothing:\n{}",
            srv.stderr()
        );
    }
    // Node 1 loses its storage: its health check answers 503 and HAProxy
    // takes it out; every later download is node 0's.
    fs::remove_dir_all(&nodes[1].1).unwrap();
    let out_of_rotation = wait_until(PATIENCE, Duration::from_millis(100), || {
        hp.statuses() == ["UP", "DOWN"]
    });
    assert!(out_of_rotation, "statuses {:?}", hp.statuses());
    for i in 0..4 {
        let name = format!("after{i}.bin");
        ferry(&out, &["get", &hp.host(), "a.bin", "-o", &name, "-q"]).ok();
        assert_eq!(fs::read(out.join(&name)).unwrap(), data, "after {i}");
    }
    assert!(
        nodes[1].0.stderr().contains("storage unreachable"),
        "{}",
        nodes[1].0.stderr()
    );
}

#[test]
fn a_node_killed_mid_download_is_resumed_on_the_other_through_haproxy() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = sparse_nodes(tmp.path(), 256 << 20, &[]);
    let size = file_len(&nodes[0].1.join("big.bin"));
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(s, _)| s.addr).collect();
    let hp = Haproxy::start(&haproxy, &addrs, "");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let part = out.join("big.bin.part");
    let child = ferry_spawn(
        &out,
        &[
            "get",
            "--retry",
            "5",
            &hp.host(),
            "big.bin",
            "-o",
            "big.bin",
        ],
    );
    // Mid-file, kill whichever node is serving it.
    let mid = wait_until(PATIENCE, Duration::from_millis(5), || {
        part.exists() && file_len(&part) >= 16 << 20
    });
    let serving = hp.sessions().iter().position(|&n| n > 0);
    let (mid, serving) = (mid, serving.expect("no node serving the download"));
    let killed_at = file_len(&part);
    nodes[serving].0.kill();
    let run = finish(child, None, "ferry get --retry 5 through haproxy".into());
    assert!(mid, "the download never reached 16 MiB\n{run}");
    assert_reconnected_and_resumed(&run);
    let got = out.join("big.bin");
    assert_eq!(file_len(&got), size);
    let mut f = fs::File::open(&got).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|&b| b == 0), "wrong bytes");
    }
    let other = 1 - serving;
    assert!(
        nodes[other].0.stderr().contains("path=big.bin"),
        "the other node did not finish it:\n{}",
        nodes[other].0.stderr()
    );
    println!(
        "FIGURE node killed with {killed_at} of {size} bytes received; resumed on node {other}"
    );
}

/// The health path needs no token and reveals nothing else; everything
/// else still does.
#[test]
fn the_health_check_needs_no_token_and_says_only_ok() {
    let tmp = tempfile::tempdir().unwrap();
    write_file(tmp.path(), "a.txt", b"secret\n");
    let srv = Server::start(tmp.path(), &["--token", "hunter2hunter2"]);
    let ask = |req: &str| {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // What HAProxy's `option httpchk` sends: HTTP/1.0, no Host.
    let ok = ask("GET /_ferry/health HTTP/1.0\r\n\r\n");
    assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
    let opt = ask("OPTIONS /_ferry/health HTTP/1.0\r\n\r\n");
    assert!(opt.starts_with("HTTP/1.0 200"), "{opt}");
    let file = ask("GET /a.txt HTTP/1.0\r\n\r\n");
    assert!(file.starts_with("HTTP/1.0 401"), "{file}");
    assert!(!file.contains("secret"), "{file}");
    let other = ask("GET /_ferry/other HTTP/1.0\r\n\r\n");
    assert!(other.starts_with("HTTP/1.0 401"), "{other}");
}

/// SIGTERM drains a node: the download it is serving finishes there (no
/// reconnect), HAProxy takes the node out (it stops accepting, so its
/// checks fail), new clients are served by the other, and the drained
/// node exits 0 once its transfer is done.
#[test]
fn a_draining_node_finishes_its_transfer_while_haproxy_sends_others_elsewhere() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut nodes = sparse_nodes(tmp.path(), 1 << 30, &["--grace", "120"]);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|(s, _)| s.addr).collect();
    let hp = Haproxy::start(&haproxy, &addrs, "");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let part = out.join("big.bin.part");
    let child = ferry_spawn(&out, &["get", &hp.host(), "big.bin", "-o", "big.bin"]);
    let mid = wait_until(PATIENCE, Duration::from_millis(5), || {
        part.exists() && file_len(&part) >= 8 << 20
    });
    let serving = hp
        .sessions()
        .iter()
        .position(|&n| n > 0)
        .expect("no node serving the download");
    signal(nodes[serving].0.pid(), "TERM");
    let other = 1 - serving;
    let down = wait_until(PATIENCE, Duration::from_millis(50), || {
        hp.statuses()
            .get(serving)
            .is_some_and(|s| s.starts_with("DOWN"))
    });
    for i in 0..3 {
        let name = format!("small{i}.txt");
        ferry(&out, &["get", &hp.host(), "small.txt", "-o", &name, "-q"]).ok();
        assert_eq!(fs::read(out.join(&name)).unwrap(), b"small\n");
    }
    let run = finish(child, None, "ferry get through haproxy".into());
    assert!(mid, "the download never reached 8 MiB\n{run}");
    assert!(down, "HAProxy kept the draining node: {:?}", hp.statuses());
    assert!(run.status.success(), "{run}");
    assert!(!run.stderr.contains("reconnect"), "{run}");
    assert_eq!(file_len(&out.join("big.bin")), 1 << 30);
    let exit = nodes[serving].0.terminate(Duration::from_secs(120));
    assert!(exit.is_some_and(|s| s.success()), "drained node: {exit:?}");
    let drained = nodes[serving].0.stderr();
    assert!(drained.contains("path=big.bin"), "{drained}");
    assert!(
        !nodes[other].0.stderr().contains("path=big.bin"),
        "the transfer moved:\n{}",
        nodes[other].0.stderr()
    );
    assert!(
        nodes[other].0.stderr().contains("path=small.txt"),
        "{}",
        nodes[other].0.stderr()
    );
}
