//! Whole trees (`get -r`), split downloads (`get -j`), streams (`-o -`), and
//! a malicious server that sends hostile names.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use ferry::protocol::{EntryKind, FileHeader, Frame, ListEntry, StatReply, MAGIC};

use crate::support::*;

fn write(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

#[test]
fn tree_download_recreates_the_directory_under_its_last_component() {
    let root = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for i in 0..300 {
        let rel = format!("pics/d{}/f{i}.bin", i % 7);
        let data = random_bytes(i * 13 % 5000, i as u64 + 1);
        write(root.path(), &rel, &data);
        expected.push((rel, data));
    }
    write(root.path(), "pics/空 目录/名字 with space.txt", b"hi");
    std::fs::create_dir_all(root.path().join("pics/empty")).unwrap();
    write(root.path(), "elsewhere.txt", b"not part of the tree");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let run = ferry(
        out.path(),
        &["get", "-r", &srv.host(), "pics/", "-o", "OUT"],
    )
    .ok();
    assert!(run.stderr.contains("301 files"), "{run}");
    for (rel, data) in &expected {
        assert_eq!(
            &std::fs::read(out.path().join("OUT").join(rel)).unwrap(),
            data,
            "{rel}"
        );
    }
    assert_eq!(
        std::fs::read(out.path().join("OUT/pics/空 目录/名字 with space.txt")).unwrap(),
        b"hi"
    );
    assert!(out.path().join("OUT/pics/empty").is_dir());
    assert!(!out.path().join("OUT/elsewhere.txt").exists());
    let leftovers: Vec<_> = files_under(out.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn tree_download_over_several_connections() {
    let root = tempfile::tempdir().unwrap();
    for i in 0..100 {
        write(
            root.path(),
            &format!("t/{}/{i}", i % 4),
            &random_bytes(4096, i),
        );
    }
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", "-r", "-j", "4", &srv.host(), "t"]).ok();
    for i in 0..100 {
        let rel = format!("t/{}/{i}", i % 4);
        assert_eq!(
            std::fs::read(out.path().join(&rel)).unwrap(),
            random_bytes(4096, i)
        );
    }
}

#[test]
fn tree_of_a_file_is_refused_and_missing_dir_reported() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "f.txt", b"x");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let r = ferry(out.path(), &["get", "-r", &srv.host(), "f.txt", "-o", "o"]).fails();
    assert!(r.stderr.contains("not a directory"), "{r}");
    let r = ferry(out.path(), &["get", "-r", &srv.host(), "nope", "-o", "o"]).fails();
    assert!(r.stderr.contains("no such file: nope"), "{r}");
    assert!(files_under(&out.path().join("o")).is_empty());
}

/// `-j 4` where one connection (the first the relay accepts) is slow,
/// 2 MiB/s against unthrottled for the others: once their ranges are done,
/// the free lanes take over the second half of its 8 MiB range, so it
/// carries well under 8 MiB, and the file is whole and verified.
#[test]
fn split_download_shares_out_a_slow_connections_range() {
    const MIB: u64 = 1024 * 1024;
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(32 * MIB as usize, 77);
    write(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let proxy = SlowProxy::start_rates(srv.addr, |k| (k == 0).then_some(2 * MIB));
    let out = tempfile::tempdir().unwrap();
    let r = ferry(
        out.path(),
        &["get", "-j", "4", &proxy.host(), "big.bin", "-o", "dl/"],
    )
    .ok();
    assert!(
        std::fs::read(out.path().join("dl/big.bin")).unwrap() == data,
        "{r}"
    );
    assert!(!out.path().join("dl/big.bin.part.meta").exists());
    let down = proxy.down();
    assert!(down.len() >= 4, "{down:?}");
    assert!(
        down[0] < 7 * MIB,
        "the slow connection carried {} bytes, most of its 8 MiB range: {down:?}",
        down[0]
    );
    eprintln!("FIGURE -j 4 with one connection at 2 MiB/s: bytes per connection {down:?}");
}

#[test]
fn split_download_is_byte_identical() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(9 * 1024 * 1024 + 12345, 99);
    write(root.path(), "big.bin", &data);
    write(root.path(), "small.bin", b"small files are not split");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    ferry(
        out.path(),
        &["get", "-j", "4", &srv.host(), "big.bin", "small.bin"],
    )
    .ok();
    assert_eq!(std::fs::read(out.path().join("big.bin")).unwrap(), data);
    assert_eq!(
        std::fs::read(out.path().join("small.bin")).unwrap(),
        b"small files are not split"
    );
    // The split went over several connections: the server logged ranged GETs.
    assert!(
        srv.wait_stderr(Duration::from_secs(5), "offset=3145728"),
        "{}",
        srv.stderr()
    );
    let r = ferry(out.path(), &["get", "-j", "4", &srv.host(), "missing"]).fails();
    assert!(r.stderr.contains("no such file: missing"), "{r}");
}

#[test]
fn stream_to_stdout_is_verified_and_exact() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(2 * 1024 * 1024 + 3, 5);
    write(root.path(), "s.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(ferry_bin());
    cmd.args(["get", &srv.host(), "s.bin", "-o", "-"])
        .current_dir(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    let outp = child.wait_with_output().unwrap();
    assert!(
        outp.status.success(),
        "{}",
        String::from_utf8_lossy(&outp.stderr)
    );
    assert!(outp.stdout == data, "stdout differs from the file");
    assert!(
        files_under(out.path()).is_empty(),
        "-o - must not create files"
    );
}

/// A hostile server: answers the hello, claims every path is a directory,
/// lists `entries` for `evil`, and serves every GET with `body`, its trailer
/// carrying the right hash, or a wrong one if `corrupt`. Serves one
/// connection.
fn evil_server(
    entries: Vec<ListEntry>,
    body: &'static [u8],
    corrupt: bool,
) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let handle = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut out = MAGIC.to_vec();
        let mut chunk = [0u8; 4096];
        let mut greeted = false;
        for _ in 0..10_000 {
            if !greeted && buf.len() >= 8 {
                buf.drain(..8);
                greeted = true;
            }
            let parsed = if greeted {
                Frame::parse(&buf).unwrap()
            } else {
                None
            };
            let Some((frame, used)) = parsed else {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            buf.drain(..used);
            match frame {
                Frame::Hello { .. } => Frame::Welcome {
                    version: 1,
                    caps: 0,
                }
                .encode(&mut out),
                Frame::Stat { .. } => Frame::StatReply(StatReply {
                    kind: EntryKind::Dir,
                    size: 0,
                    mtime_ns: 0,
                    hash: None,
                })
                .encode(&mut out),
                Frame::List { path } => {
                    let list: &[ListEntry] = if path == b"evil" { &entries } else { &[] };
                    for e in list {
                        Frame::ListEntry(e.clone()).encode(&mut out);
                    }
                    Frame::ListEnd {
                        count: list.len() as u64,
                    }
                    .encode(&mut out);
                }
                Frame::Get(_) => {
                    Frame::FileHeader(FileHeader {
                        offset: 0,
                        length: body.len() as u64,
                        size: body.len() as u64,
                        mtime_ns: 0,
                    })
                    .encode(&mut out);
                    out.extend_from_slice(body);
                    let hashed: &[u8] = if corrupt { b"something else" } else { body };
                    Frame::Trailer {
                        hash: *blake3::hash(hashed).as_bytes(),
                    }
                    .encode(&mut out);
                }
                _ => return,
            }
            if s.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
    });
    (addr, handle)
}

fn entry(name: &[u8], kind: EntryKind) -> ListEntry {
    ListEntry {
        name: name.to_vec(),
        kind,
        size: 5,
        mtime_ns: 0,
    }
}

#[test]
fn malicious_server_names_cannot_escape_the_output_dir() {
    let hostile: Vec<&[u8]> = vec![
        b"..",
        b".",
        b"../escaped.txt",
        b"/tmp/absolute.txt",
        b"a/b.txt",
        b"..\\win.txt",
        b"nul\0byte",
        b"\x1b[31mred\x1b[0m",
        b"new\nline",
        b"\xff\xfeinvalid",
        b"",
    ];
    let mut entries: Vec<ListEntry> = hostile.iter().map(|n| entry(n, EntryKind::File)).collect();
    entries.push(entry(b"..", EntryKind::Dir));
    entries.push(entry(b"good.txt", EntryKind::File));
    let (addr, server) = evil_server(entries, b"hello", false);
    let base = tempfile::tempdir().unwrap();
    let out = base.path().join("out");
    let run = ferry(base.path(), &["get", "-r", &addr, "evil", "-o", "out"]).fails();
    server.join().unwrap();
    // The one good name was saved; nothing else exists anywhere under base.
    assert_eq!(std::fs::read(out.join("evil/good.txt")).unwrap(), b"hello");
    assert_eq!(
        files_under(base.path()),
        vec![Path::new("out/evil/good.txt").to_path_buf()]
    );
    assert!(!Path::new("/tmp/absolute.txt").exists());
    // Each hostile name was reported, and no control character reached the terminal.
    assert!(
        run.stderr.matches("unsafe name").count() >= hostile.len(),
        "{run}"
    );
    assert!(!run.stderr.contains('\x1b'), "raw escape printed: {run}");
}

#[test]
fn existing_symlink_in_the_output_tree_is_not_followed() {
    let root = tempfile::tempdir().unwrap();
    write(root.path(), "t/sub/f.txt", b"data");
    let srv = Server::start(root.path(), &[]);
    let base = tempfile::tempdir().unwrap();
    let victim = base.path().join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::create_dir_all(base.path().join("out/t")).unwrap();
    std::os::unix::fs::symlink(&victim, base.path().join("out/t/sub")).unwrap();
    let run = ferry(base.path(), &["get", "-r", &srv.host(), "t", "-o", "out"]).fails();
    assert!(run.stderr.contains("symlinks are not followed"), "{run}");
    assert!(files_under(&victim).is_empty(), "wrote through a symlink");
}

#[test]
fn zero_copy_body_survives_pipelining_over_one_connection() {
    // Many files whose bodies go out by sendfile with the next header queued
    // behind them: a framing slip would corrupt every file after it.
    let root = tempfile::tempdir().unwrap();
    for i in 0..200u64 {
        write(
            root.path(),
            &format!("p/{i:03}"),
            &random_bytes((i * 977 % 70_000) as usize, i),
        );
    }
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", "-r", &srv.host(), "p"]).ok();
    for i in 0..200u64 {
        assert_eq!(
            std::fs::read(out.path().join(format!("p/{i:03}"))).unwrap(),
            random_bytes((i * 977 % 70_000) as usize, i)
        );
    }
}

#[test]
fn hash_mismatch_fails_the_download_and_leaves_nothing() {
    let (addr, server) = evil_server(Vec::new(), b"tampered bytes", true);
    let base = tempfile::tempdir().unwrap();
    let run = ferry(base.path(), &["get", &addr, "x.bin", "-o", "out/"]).fails();
    server.join().unwrap();
    assert!(run.stderr.contains("hash mismatch: x.bin"), "{run}");
    assert!(
        files_under(base.path()).is_empty(),
        "{:?}",
        files_under(base.path())
    );
}

#[test]
fn hash_mismatch_on_stdout_turns_the_exit_status_non_zero() {
    let (addr, server) = evil_server(Vec::new(), b"tampered bytes", true);
    let base = tempfile::tempdir().unwrap();
    let run = ferry(base.path(), &["get", &addr, "x.bin", "-o", "-"]).fails();
    server.join().unwrap();
    assert_eq!(run.stdout, "tampered bytes");
    assert!(run.stderr.contains("hash mismatch: x.bin"), "{run}");
}
