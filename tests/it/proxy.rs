//! Issue 14, point 2: `serve --proxy-protocol`. A trusted proxy's PROXY
//! header (v2, or v1 text) names the client everywhere the peer shows
//! (logs, message lines); an untrusted peer's header is not honoured; a
//! trusted peer without one is closed; `LOCAL` keeps the proxy's own
//! address. Last, a real HAProxy with `send-proxy-v2` in front.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::time::Duration;

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// A PROXY v2 header: `PROXY` TCP over IPv4 from `src` to 192.0.2.1:80,
/// or `LOCAL` with no addresses.
fn v2_header(src: Option<SocketAddrV4>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match src {
        Some(src) => {
            h.extend_from_slice(&[0x21, 0x11, 0, 12]);
            h.extend_from_slice(&src.ip().octets());
            h.extend_from_slice(&[192, 0, 2, 1]);
            h.extend_from_slice(&src.port().to_be_bytes());
            h.extend_from_slice(&80u16.to_be_bytes());
        }
        None => h.extend_from_slice(&[0x20, 0x00, 0, 0]),
    }
    h
}

fn claimed(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 7), port)
}

/// Sends `bytes` on a fresh connection, half-closes, and returns all the
/// server sent back (empty if it reset or closed without a word).
fn exchange(srv: &Server, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

fn with_header(header: &[u8], rest: &[u8]) -> Vec<u8> {
    [header, rest].concat()
}

fn served_a_txt(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    text.starts_with("HTTP/1.1 200") && text.ends_with("hello\n")
}

#[test]
fn a_trusted_proxys_header_names_the_client_for_http_native_and_v1() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"hello\n");
    let srv = Server::start_logging(root.path(), &["--proxy-protocol"], Some("ferry=debug"));

    let reply = exchange(
        &srv,
        &with_header(&v2_header(Some(claimed(4242))), &get_request("/a.txt")),
    );
    assert!(
        served_a_txt(&reply),
        "{}\nlog:\n{}",
        String::from_utf8_lossy(&reply),
        srv.stderr()
    );
    assert!(
        srv.wait_stderr(
            PATIENCE,
            "PROXY header: client 203.0.113.7:4242 via proxy 127.0.0.1:"
        ),
        "{}",
        srv.stderr()
    );
    // The connection's log lines (its span) name the client.
    assert!(
        srv.wait_stderr(PATIENCE, "peer=203.0.113.7:4242"),
        "{}",
        srv.stderr()
    );

    // Native ferry: the handshake follows the header, nothing lost.
    let mut wire = Wire::connect(srv.addr, PATIENCE);
    wire.send(&v2_header(Some(claimed(4343))));
    wire.handshake();
    drop(wire);
    assert!(
        srv.wait_stderr(PATIENCE, "peer=203.0.113.7:4343"),
        "{}",
        srv.stderr()
    );

    // v1, the text version.
    let v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 4444 80\r\n";
    let reply = exchange(&srv, &with_header(v1, &get_request("/a.txt")));
    assert!(served_a_txt(&reply), "{}", String::from_utf8_lossy(&reply));
    assert!(
        srv.wait_stderr(PATIENCE, "peer=203.0.113.7:4444"),
        "{}",
        srv.stderr()
    );
}

#[test]
fn message_lines_name_the_client_behind_the_proxy() {
    let root = tempfile::tempdir().unwrap();
    let srv = Server::start_logging(
        root.path(),
        &["--tutorial", "message", "--proxy-protocol"],
        Some("ferry=debug"),
    );
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(&with_header(&v2_header(Some(claimed(4545))), b"hi there"))
        .unwrap();
    let mut ack = [0u8; 64];
    let n = s.read(&mut ack).unwrap();
    assert!(n > 0, "no acknowledgement");
    assert!(
        srv.wait_stdout(PATIENCE, |l| l == "message from 203.0.113.7:4545: hi there"),
        "stdout: {:?}\nlog:\n{}",
        srv.stdout_lines(),
        srv.stderr()
    );
}

#[test]
fn an_untrusted_peers_header_is_not_honoured() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"hello\n");
    let srv = Server::start_logging(
        root.path(),
        &["--proxy-protocol", "--trusted-proxy", "10.0.0.0/8"],
        Some("ferry=debug"),
    );
    let reply = exchange(
        &srv,
        &with_header(&v2_header(Some(claimed(4242))), &get_request("/a.txt")),
    );
    assert!(!served_a_txt(&reply), "{}", String::from_utf8_lossy(&reply));
    assert!(
        !String::from_utf8_lossy(&reply).contains("hello"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // The same request without a header is served: 127.0.0.1 is a direct
    // client here.
    let reply = exchange(&srv, &get_request("/a.txt"));
    assert!(served_a_txt(&reply), "{}", String::from_utf8_lossy(&reply));
    assert!(
        srv.wait_stderr(PATIENCE, "peer=127.0.0.1:"),
        "{}",
        srv.stderr()
    );
    assert!(!srv.stderr().contains("203.0.113.7"), "{}", srv.stderr());
}

#[test]
fn a_trusted_peer_without_a_header_is_closed_and_the_server_goes_on() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"hello\n");
    let srv = Server::start_logging(root.path(), &["--proxy-protocol"], Some("ferry=debug"));
    assert!(
        srv.wait_stdout(Duration::from_secs(5), |l| l
            .contains("PROXY protocol required from 127.0.0.1/32, ::1/128")),
        "{:?}",
        srv.stdout_lines()
    );
    // A plain request, a header cut short, a header of a wrong version.
    let mut wrong_version = v2_header(Some(claimed(4242)));
    wrong_version[12] = 0x11;
    let cut = v2_header(Some(claimed(4242)));
    for (bytes, why) in [
        (get_request("/a.txt"), "no PROXY protocol header"),
        (cut[..20].to_vec(), "closed after 20 bytes"),
        (
            with_header(&wrong_version, &get_request("/a.txt")),
            "PROXY protocol version 1 is not supported",
        ),
    ] {
        let reply = exchange(&srv, &bytes);
        assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
        assert!(srv.wait_stderr(PATIENCE, why), "{why}:\n{}", srv.stderr());
    }
    let reply = exchange(
        &srv,
        &with_header(&v2_header(Some(claimed(4242))), &get_request("/a.txt")),
    );
    assert!(served_a_txt(&reply), "{}", String::from_utf8_lossy(&reply));
}

#[test]
fn local_keeps_the_proxys_own_address() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"hello\n");
    let srv = Server::start_logging(root.path(), &["--proxy-protocol"], Some("ferry=debug"));
    let reply = exchange(&srv, &with_header(&v2_header(None), &get_request("/a.txt")));
    assert!(served_a_txt(&reply), "{}", String::from_utf8_lossy(&reply));
    assert!(
        srv.wait_stderr(PATIENCE, "PROXY header (Local)"),
        "{}",
        srv.stderr()
    );
    assert!(
        srv.wait_stderr(PATIENCE, "peer=127.0.0.1:"),
        "{}",
        srv.stderr()
    );
}

#[test]
fn behind_haproxy_send_proxy_v2_downloads_are_identical_and_the_client_is_known() {
    let Some(haproxy) = tool("haproxy") else {
        return;
    };
    let Some(curl) = tool("curl") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let data = random_bytes(3 << 20, 14);
    write_file(&root, "big.bin", &data);
    let srv = Server::start_logging(&root, &["--proxy-protocol"], Some("ferry=debug"));
    let hp = Haproxy::start(&haproxy, &[srv.addr], "send-proxy-v2 check-send-proxy");

    ferry(
        tmp.path(),
        &["get", &hp.host(), "big.bin", "-o", "native.bin", "-q"],
    )
    .ok();
    assert_eq!(fs::read(tmp.path().join("native.bin")).unwrap(), data);

    // curl reports its own port: only a parsed header can tell ferry that
    // (the TCP peer ferry sees is HAProxy's outgoing socket).
    let local_port = run_tool(
        tmp.path(),
        &curl,
        &[
            "-sSf",
            "--max-time",
            "30",
            "-o",
            "http.bin",
            "-w",
            "%{local_port}",
            &format!("http://{}/big.bin", hp.host()),
        ],
    )
    .ok()
    .stdout;
    assert_eq!(fs::read(tmp.path().join("http.bin")).unwrap(), data);
    let want = format!(
        "PROXY header: client 127.0.0.1:{} via proxy 127.0.0.1:",
        local_port.trim()
    );
    assert!(
        srv.wait_stderr(PATIENCE, &want),
        "no {want:?} in:\n{}",
        srv.stderr()
    );
    assert!(
        !srv.stderr()
            .contains("closing a connection from a trusted proxy"),
        "{}",
        srv.stderr()
    );
}
