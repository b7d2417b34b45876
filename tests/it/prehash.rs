//! Issue 13, point 4: the server hashes ahead of demand, so a file's first
//! download finds its BLAKE3 ready. Seen from outside without downloading
//! anything: a `HEAD` answer carries `X-Ferry-Blake3` only when the server
//! already knows the hash (it never hashes for a HEAD).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(60);

/// The `X-Ferry-Blake3` of a `HEAD` of `path`, if the answer has one.
fn known_hash(host: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "HEAD /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    s.read_to_string(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-ferry-blake3")
            .then(|| v.trim().to_string())
    })
}

fn tree(root: &std::path::Path) -> Vec<(&'static str, String)> {
    let files = [
        ("a.bin", 3 << 20),
        ("sub/b.bin", 1 << 20),
        ("sub/deeper/c.bin", 200_000),
    ];
    let mut want = Vec::new();
    for (i, (name, len)) in files.into_iter().enumerate() {
        let data = random_bytes(len, 70 + i as u64);
        write_file(root, name, &data);
        want.push((name, blake3::hash(&data).to_hex().to_string()));
    }
    // The server keeps no hash of a file changed in the last 2 s.
    std::thread::sleep(Duration::from_millis(2100));
    want
}

/// By default the whole tree is hashed at startup, with no download.
#[test]
fn the_server_hashes_its_tree_ahead_of_any_download() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tree(tmp.path());
    let srv = Server::start(tmp.path(), &[]);
    let host = srv.host();
    for (name, hash) in &want {
        let seen = wait_until(PATIENCE, Duration::from_millis(100), || {
            known_hash(&host, name).is_some()
        });
        assert!(seen, "{name} never hashed ahead");
        assert_eq!(known_hash(&host, name).as_ref(), Some(hash), "{name}");
    }
    // A native download of a file hashed ahead verifies against it.
    let r = ferry(tmp.path(), &["get", &host, "a.bin", "-o", "got.bin"]).ok();
    assert_eq!(
        std::fs::read(tmp.path().join("got.bin")).unwrap(),
        std::fs::read(tmp.path().join("a.bin")).unwrap(),
        "{r}"
    );
}

/// With `--prehash listed`, what is hashed ahead is what was listed: the
/// files of the listed directory, not those beside or beneath it.
#[test]
fn with_prehash_listed_a_listing_hashes_that_directory_only() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tree(tmp.path());
    let srv = Server::start(tmp.path(), &["--prehash", "listed"]);
    let host = srv.host();
    ferry(tmp.path(), &["ls", &host, "sub"]).ok();
    let seen = wait_until(PATIENCE, Duration::from_millis(100), || {
        known_hash(&host, "sub/b.bin").is_some()
    });
    assert!(seen, "sub/b.bin not hashed after its directory was listed");
    assert_eq!(known_hash(&host, "sub/b.bin").as_ref(), Some(&want[1].1));
    // The thread works through its queue in order and has finished the
    // listing's job: nothing else was hashed.
    assert_eq!(known_hash(&host, "a.bin"), None);
    assert_eq!(known_hash(&host, "sub/deeper/c.bin"), None);
    // A listing over HTTP counts too.
    let page = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", &format!("http://{host}/")])
        .output()
        .expect("curl must be installed (the CI script installs it)");
    assert!(page.status.success());
    let seen = wait_until(PATIENCE, Duration::from_millis(100), || {
        known_hash(&host, "a.bin").is_some()
    });
    assert!(seen, "a.bin not hashed after the root was listed over HTTP");
    assert_eq!(known_hash(&host, "sub/deeper/c.bin"), None);
}

/// With `--prehash off`, a listing hashes nothing and a range download
/// (which never makes the server hash) leaves the hash unknown.
#[test]
fn with_prehash_off_nothing_is_hashed_before_a_whole_download() {
    let tmp = tempfile::tempdir().unwrap();
    let want = tree(tmp.path());
    let srv = Server::start(tmp.path(), &["--prehash", "off"]);
    let host = srv.host();
    ferry(tmp.path(), &["ls", &host, "sub"]).ok();
    ferry(tmp.path(), &["ls", &host]).ok();
    assert_eq!(known_hash(&host, "sub/b.bin"), None);
    assert_eq!(known_hash(&host, "a.bin"), None);
    // A whole native download makes the server hash it (the trailer).
    ferry(tmp.path(), &["get", &host, "a.bin", "-o", "got.bin"]).ok();
    assert_eq!(known_hash(&host, "a.bin").as_ref(), Some(&want[0].1));
    assert_eq!(known_hash(&host, "sub/b.bin"), None);
}
