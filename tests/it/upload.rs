//! Uploads: `ferry put`, HTTP PUT, their refusals, resume after kill -9,
//! racing uploads, a full disk, and the traversal battery against writes.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use ferry::protocol::{caps, Frame, MAGIC};

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed (the CI script installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (body.to_string(), code.to_string())
}

/// A partial PUT of `file` (`@path`) with a Content-Range, and a hash.
fn partial_put(url: &str, file: &str, range: &str, hash: Option<&str>) -> (String, String) {
    let mut args = vec!["-X", "PUT", "--data-binary", file, "-H", range];
    let h;
    if let Some(x) = hash {
        h = format!("X-Ferry-Blake3: {x}");
        args.extend(["-H", &h]);
    }
    args.push(url);
    curl(&args)
}

/// Every file under `dir`, hidden ones included, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in walk(dir) {
        if e.is_file() {
            out.push((
                e.strip_prefix(dir).unwrap().display().to_string(),
                fs::read(&e).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                v.extend(walk(&p));
            }
            v.push(p);
        }
    }
    v
}

/// A `multipart/form-data` POST to `url` with `files` (file names as raw
/// bytes, what a hostile client can put there) and extra headers, built
/// by hand so any name can be sent; returns (body, status).
fn form_post(url: &str, files: &[(&[u8], &[u8])], headers: &[&str]) -> (String, String) {
    let mut body = Vec::new();
    for (name, data) in files {
        body.extend_from_slice(
            b"--XfErRyBoUnDaRy\r\nContent-Disposition: form-data; name=\"file\"; filename=\"",
        );
        body.extend_from_slice(name);
        body.extend_from_slice(b"\"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XfErRyBoUnDaRy\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nnot a file\r\n--XfErRyBoUnDaRy--\r\n");
    let file = tempfile::NamedTempFile::new().unwrap();
    fs::write(file.path(), &body).unwrap();
    let data = format!("@{}", file.path().display());
    let mut args = vec![
        "--path-as-is",
        "-H",
        "Content-Type: multipart/form-data; boundary=XfErRyBoUnDaRy",
        "-H",
        "Accept: application/json",
        "--data-binary",
        &data,
    ];
    for h in headers {
        args.extend(["-H", h]);
    }
    args.push(url);
    curl(&args)
}

fn temps_in(dir: &Path) -> usize {
    walk(dir)
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".ferry-up-"))
        })
        .count()
}

#[test]
fn put_files_and_trees_and_refuse_what_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let local = tmp.path().join("local");
    fs::create_dir_all(&root).unwrap();
    let big = random_bytes(3 * 1024 * 1024 + 7, 1);
    write_file(&local, "big.bin", &big);
    write_file(&local, "tree/a.txt", b"a");
    write_file(&local, "tree/sub/b.txt", b"bb");
    write_file(&local, "tree/.secret", b"hidden");
    std::os::unix::fs::symlink("a.txt", local.join("tree/link")).unwrap();
    let srv = Server::start(&root, &["--upload"]);
    assert!(srv.startup.contains("uploads on"), "{}", srv.startup);
    let host = srv.host();
    let r = ferry(&local, &["put", &host, "big.bin"]).ok();
    assert!(r.stderr.contains("verified"), "{r}");
    assert_eq!(fs::read(root.join("big.bin")).unwrap(), big);
    // The saved file keeps the local modification time.
    assert_eq!(
        fs::metadata(root.join("big.bin"))
            .unwrap()
            .modified()
            .unwrap(),
        fs::metadata(local.join("big.bin"))
            .unwrap()
            .modified()
            .unwrap()
    );
    let r = ferry(&local, &["put", &host, "-r", "tree", "--to", "in/here"]).ok();
    assert!(r.stderr.contains("skipped 1 file with hidden names"), "{r}");
    assert!(r.stderr.contains("symbolic links are not followed"), "{r}");
    assert_eq!(fs::read(root.join("in/here/tree/a.txt")).unwrap(), b"a");
    assert_eq!(
        fs::read(root.join("in/here/tree/sub/b.txt")).unwrap(),
        b"bb"
    );
    assert!(!root.join("in/here/tree/.secret").exists());
    assert!(!root.join("in/here/tree/link").exists());
    // Existing: refused, untouched.
    write_file(&local, "big.bin", b"changed");
    let r = ferry(&local, &["put", &host, "big.bin"]).fails();
    assert!(r.stderr.contains("already exists"), "{r}");
    assert_eq!(fs::read(root.join("big.bin")).unwrap(), big);
    assert_eq!(temps_in(&root), 0);
    drop(srv);
    // With --overwrite: replaced.
    let srv = Server::start(&root, &["--upload", "--overwrite"]);
    let r = ferry(&local, &["put", &srv.host(), "big.bin"]).ok();
    assert!(r.stderr.contains("replaced"), "{r}");
    assert_eq!(fs::read(root.join("big.bin")).unwrap(), b"changed");
    // A directory without -r is refused by the client.
    let r = ferry(&local, &["put", &srv.host(), "tree"]).fails();
    assert!(r.stderr.contains("use -r"), "{r}");
    // And the upload is served back, verified.
    let out = tmp.path().join("back");
    fs::create_dir_all(&out).unwrap();
    ferry(&out, &["get", &srv.host(), "in/here/tree/sub/b.txt"]).ok();
    assert_eq!(fs::read(out.join("b.txt")).unwrap(), b"bb");
}

#[test]
fn uploads_are_off_by_default_and_limits_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    write_file(tmp.path(), "f.bin", &random_bytes(5000, 2));
    let srv = Server::start(&root, &[]);
    let r = ferry(tmp.path(), &["put", &srv.host(), "f.bin"]).fails();
    assert!(r.stderr.contains("does not accept uploads"), "{r}");
    let f = tmp.path().join("f.bin");
    let (body, code) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &format!("http://{}/f.bin", srv.host()),
    ]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("--upload"), "{body}");
    // A raw Put to a read-only server: refused with ReadOnly, nothing written.
    let mut w = Wire::connect(srv.addr, Duration::from_secs(10));
    w.handshake();
    let mut req = Vec::new();
    Frame::Put(ferry::protocol::PutRequest {
        path: b"raw.bin".to_vec(),
        size: 3,
        mtime_ns: 0,
        inline: true,
    })
    .encode(&mut req);
    req.extend_from_slice(b"abc");
    Frame::PutEnd {
        hash: *blake3::hash(b"abc").as_bytes(),
    }
    .encode(&mut req);
    w.send(&req);
    match w.expect_frame("Error") {
        Frame::Error { code, .. } => assert_eq!(code, ferry::protocol::ErrorCode::ReadOnly as u16),
        other => panic!("{other:?}"),
    }
    assert_eq!(snapshot(&root), vec![]);
    drop(srv);

    let srv = Server::start(&root, &["--upload", "--max-upload-size", "4K"]);
    let r = ferry(tmp.path(), &["put", &srv.host(), "f.bin"]).fails();
    assert!(r.stderr.contains("over the server's upload limit"), "{r}");
    let (_, code) = curl(&[
        "-T",
        f.to_str().unwrap(),
        &format!("http://{}/f.bin", srv.host()),
    ]);
    assert_eq!(code, "413");
    assert_eq!(snapshot(&root), vec![]);
}

#[test]
fn http_put_creates_resumes_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let data = random_bytes(2_000_000, 3);
    write_file(tmp.path(), "whole.bin", &data);
    write_file(tmp.path(), "p1", &data[..700_000]);
    write_file(tmp.path(), "p2", &data[700_000..]);
    let srv = Server::start(&root, &["--upload"]);
    let base = format!("http://{}", srv.host());
    let whole = tmp.path().join("whole.bin");
    let (_, code) = curl(&[
        "-T",
        whole.to_str().unwrap(),
        &format!("{base}/new/dir/w.bin"),
    ]);
    assert_eq!(code, "201");
    assert_eq!(fs::read(root.join("new/dir/w.bin")).unwrap(), data);
    let (_, code) = curl(&[
        "-T",
        whole.to_str().unwrap(),
        &format!("{base}/new/dir/w.bin"),
    ]);
    assert_eq!(code, "409");
    // Resumable: first part, ask, the rest, verified by X-Ferry-Blake3.
    let hash = blake3::hash(&data).to_hex().to_string();
    let url = format!("{base}/r.bin");
    let p1 = format!("@{}", tmp.path().join("p1").display());
    let p2 = format!("@{}", tmp.path().join("p2").display());
    let (_, code) = partial_put(&url, &p1, "Content-Range: bytes 0-699999/2000000", None);
    assert_eq!(code, "308");
    assert!(
        !root.join("r.bin").exists(),
        "a part is never under the final name"
    );
    let out = Command::new("curl")
        .args([
            "-sS",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "-X",
            "PUT",
            "-H",
            "Content-Range: bytes */2000000",
            &url,
        ])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(head.contains("upload-offset: 700000"), "{head}");
    assert!(head.contains("range: bytes=0-699999"), "{head}");
    // A wrong hash is refused and nothing is kept.
    let bad = "00".repeat(32);
    let (_, code) = partial_put(
        &url,
        &p2,
        "Content-Range: bytes 700000-1999999/2000000",
        Some(&bad),
    );
    assert_eq!(code, "400");
    assert!(!root.join("r.bin").exists());
    assert_eq!(temps_in(&root), 0);
    let (_, code) = partial_put(&url, &p1, "Content-Range: bytes 0-699999/2000000", None);
    assert_eq!(code, "308");
    let (_, code) = partial_put(
        &url,
        &p2,
        "Content-Range: bytes 700000-1999999/2000000",
        Some(&hash),
    );
    assert_eq!(code, "201");
    assert_eq!(fs::read(root.join("r.bin")).unwrap(), data);
    assert_eq!(temps_in(&root), 0);
    // Temporaries are never listed.
    let (listing, _) = curl(&[&format!("{base}/?format=json")]);
    assert!(!listing.contains("ferry-up"), "{listing}");
}

#[test]
fn kill_nine_mid_put_never_leaves_a_wrong_file_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let data = random_bytes(64 * 1024 * 1024, 4);
    write_file(tmp.path(), "big.bin", &data);
    let srv = Server::start(&root, &["--upload"]);
    let host = srv.host();
    let target = root.join("big.bin");
    let mut kills = 0;
    let mut largest_temp = 0u64;
    for i in 0..20u64 {
        let child = ferry_spawn(tmp.path(), &["put", "-q", &host, "big.bin"]);
        std::thread::sleep(Duration::from_millis(5 + (i * 7) % 60));
        sigkill(child.id());
        let _ = finish(child, None, "ferry put".into());
        kills += 1;
        if target.exists() {
            // Finished before the kill: then it is whole.
            assert_eq!(fs::read(&target).unwrap(), data, "kill {i}");
            break;
        }
        for p in walk(&root) {
            largest_temp = largest_temp.max(file_len(&p));
        }
    }
    let r = ferry(tmp.path(), &["put", &host, "big.bin"]);
    if !target.exists() || r.status.success() {
        let r = r.ok();
        eprintln!("FIGURE kill -9 mid-put: {kills} kills, largest temporary {largest_temp} bytes; re-run: {}", r.stderr.trim());
    }
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(temps_in(&root), 0);
}

#[test]
fn racing_puts_of_one_name_one_wins_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let a = random_bytes(8 * 1024 * 1024, 5);
    let b = random_bytes(8 * 1024 * 1024, 6);
    write_file(&tmp.path().join("a"), "same.bin", &a);
    write_file(&tmp.path().join("b"), "same.bin", &b);
    let srv = Server::start(&root, &["--upload"]);
    let ca = ferry_spawn(&tmp.path().join("a"), &["put", &srv.host(), "same.bin"]);
    let cb = ferry_spawn(&tmp.path().join("b"), &["put", &srv.host(), "same.bin"]);
    let ra = finish(ca, None, "put a".into());
    let rb = finish(cb, None, "put b".into());
    let wins = [&ra, &rb].iter().filter(|r| r.status.success()).count();
    assert_eq!(wins, 1, "{ra}\n{rb}");
    let loser = if ra.status.success() { &rb } else { &ra };
    assert!(loser.stderr.contains("already exists"), "{loser}");
    let got = fs::read(root.join("same.bin")).unwrap();
    assert!(got == a || got == b);
    assert_eq!(temps_in(&root), 0);
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_server_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    write_file(&root, "small.txt", b"still served\n");
    write_file(tmp.path(), "big.bin", &random_bytes(4 * 1024 * 1024, 7));
    // The server may write no file past 1 MiB (RLIMIT_FSIZE: EFBIG, as a
    // full disk or quota would be).
    let srv = Server::start(&root, &["--upload"]);
    let set = Command::new("prlimit")
        .args(["--pid", &srv.pid().to_string(), "--fsize=1048576"])
        .status()
        .expect("prlimit (util-linux) must be installed");
    assert!(set.success());
    let r = ferry(tmp.path(), &["put", &srv.host(), "big.bin"]).fails();
    assert!(r.stderr.contains("disk is full"), "{r}");
    assert!(!root.join("big.bin").exists());
    assert_eq!(
        temps_in(&root),
        0,
        "the temporary is removed on a full disk"
    );
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    ferry(&out, &["get", &srv.host(), "small.txt"]).ok();
    assert_eq!(fs::read(out.join("small.txt")).unwrap(), b"still served\n");
}

/// Put frames by hand, for paths `ferry put` would never send.
fn raw_put(addr: std::net::SocketAddr, path: &[u8], body: &[u8]) -> Option<Frame> {
    let mut w = Wire::connect(addr, Duration::from_secs(10));
    let mut hello = MAGIC.to_vec();
    Frame::Hello {
        version: 1,
        caps: caps::UPLOAD,
        token: None,
    }
    .encode(&mut hello);
    w.send(&hello);
    w.read_magic().ok()?;
    w.read_frame().ok()?;
    let mut req = Vec::new();
    let mut payload = vec![0x06];
    payload.extend_from_slice(&(path.len() as u16).to_be_bytes());
    payload.extend_from_slice(path);
    payload.extend_from_slice(&(body.len() as u64).to_be_bytes());
    payload.extend_from_slice(&0i64.to_be_bytes());
    payload.push(1);
    req.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    req.extend_from_slice(&payload);
    req.extend_from_slice(body);
    Frame::PutEnd {
        hash: *blake3::hash(body).as_bytes(),
    }
    .encode(&mut req);
    let _ = w.try_send(&req);
    w.read_frame().ok()
}

#[test]
fn writes_never_leave_the_root_or_follow_links() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let root = base.join("root");
    write_file(&base.join("outside"), "secret.txt", b"outside, untouched\n");
    write_file(&root, "a/inside.txt", b"inside\n");
    std::os::unix::fs::symlink(base.join("outside"), root.join("out_dir")).unwrap();
    std::os::unix::fs::symlink(base.join("outside/secret.txt"), root.join("out_file")).unwrap();
    std::os::unix::fs::symlink("a", root.join("in_dir")).unwrap();
    std::os::unix::fs::symlink("a/inside.txt", root.join("in_file")).unwrap();
    let fifo = root.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let before_outside = snapshot(&base.join("outside"));
    let srv = Server::start(&root, &["--upload", "--overwrite", "--hidden"]);
    #[rustfmt::skip]
    let spellings: Vec<&[u8]> = vec![
        b"..", b"../x", b"../outside/secret.txt", b"a/../../outside/secret.txt",
        b"/etc/x", b"//etc/x", b"..\\outside\\secret.txt", b"a\\..\\..\\x",
        b"x\0/../../outside/x", b"\xc0\xae\xc0\xae/x",
        b"\xff\xfe/../x", b"./../x", b"a/./../../x", b"", b".", b"a/",
        b"out_dir/secret.txt", b"out_dir/new.txt", b"out_file", b"in_dir/new.txt",
        b"in_file", b"fifo", b"a", b"out_dir", b".ferry-up-0123456789abcdef0123456789abcdef",
        b"a/inside.txt/x",
    ];
    // Names that only look like a way out are real names inside the root
    // natively (no percent-decoding there): saved exactly there.
    for (p, lands) in [
        ("%2e%2e/outside/secret.txt", "%2e%2e/outside/secret.txt"),
        ("proc/self/root/etc/x", "proc/self/root/etc/x"),
    ] {
        match raw_put(srv.addr, p.as_bytes(), b"inside!\n") {
            Some(Frame::PutDone { .. }) => {
                assert_eq!(fs::read(root.join(lands)).unwrap(), b"inside!\n");
            }
            other => panic!("{p}: {other:?}"),
        }
    }
    let mut refused = 0;
    for p in &spellings {
        match raw_put(srv.addr, p, b"PWNED\n") {
            Some(Frame::Error { .. }) | None => refused += 1,
            Some(other) => panic!("{:?} was accepted: {other:?}", String::from_utf8_lossy(p)),
        }
        // Over HTTP too, the path as is.
        let enc: String = p
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() && b != b'%' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let url = format!("http://{}/{enc}", srv.host());
        let out = Command::new("curl")
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--path-as-is",
                "-X",
                "PUT",
                "--data-binary",
                "PWNED",
                &url,
            ])
            .output()
            .unwrap();
        let code = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            !code.starts_with('2'),
            "{:?} over HTTP: {code}",
            String::from_utf8_lossy(p)
        );
        // As a form's file name, and as the directory a form posts to.
        let base_url = format!("http://{}/", srv.host());
        let (body, code) = form_post(&base_url, &[(p, b"PWNED\n")], &[]);
        assert!(
            !code.starts_with('2'),
            "{:?} as a form file name: {code} {body}",
            String::from_utf8_lossy(p)
        );
        // (The root and `a` are real directories: a post there is fine.)
        if ![&b""[..], b"a", b"a/"].contains(p) {
            let (body, code) = form_post(&format!("{url}/"), &[(b"x.txt", b"PWNED\n")], &[]);
            assert!(
                !code.starts_with('2'),
                "{:?} as a form's directory: {code} {body}",
                String::from_utf8_lossy(p)
            );
        }
    }
    assert_eq!(snapshot(&base.join("outside")), before_outside);
    assert_eq!(fs::read(root.join("a/inside.txt")).unwrap(), b"inside\n");
    assert!(fs::symlink_metadata(root.join("in_file"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo_like());
    for (name, bytes) in snapshot(&root) {
        assert!(!bytes.starts_with(b"PWNED"), "{name} was written");
    }
    eprintln!("FIGURE put traversal: {} spellings refused over native and HTTP; nothing outside written, no link written through", refused);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn a_server_killed_mid_put_keeps_the_temporary_and_a_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let data = random_bytes(64 * 1024 * 1024, 8);
    write_file(tmp.path(), "big.bin", &data);
    let target = root.join("big.bin");
    let mut held = 0;
    // Bounded: a few tries to catch the server mid-body.
    for delay_ms in [40u64, 20, 80, 10, 120] {
        let mut srv = Server::start(&root, &["--upload"]);
        let child = ferry_spawn(tmp.path(), &["put", "-q", &srv.host(), "big.bin"]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        srv.kill();
        let r = finish(child, None, "ferry put".into());
        if target.exists() {
            assert_eq!(fs::read(&target).unwrap(), data);
            fs::remove_file(&target).unwrap();
            continue;
        }
        assert!(!r.status.success(), "{r}");
        held = walk(&root).iter().map(|p| file_len(p)).max().unwrap_or(0);
        if held > 0 {
            break;
        }
    }
    assert!(held > 0, "never caught the server mid-upload");
    let srv = Server::start(&root, &["--upload"]);
    let r = ferry(tmp.path(), &["put", &srv.host(), "big.bin"]).ok();
    assert!(r.stderr.contains("resumed at"), "{r}");
    eprintln!(
        "FIGURE server kill -9 mid-put: the temporary held {held} bytes; re-run: {}",
        r.stderr.trim()
    );
    assert_eq!(fs::read(&target).unwrap(), data);
    assert_eq!(temps_in(&root), 0);
}

/// The listing page's form, as `curl -F` and a browser post it: files
/// saved (text fields ignored), existing names refused, the plain-form
/// redirect, another site's page refused, the size limit, a body cut
/// short leaving nothing, and no form at all when uploads are off.
#[test]
fn form_posts_save_files_and_refuse_what_puts_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let big = random_bytes(700_000, 31);
    write_file(tmp.path(), "big.bin", &big);
    write_file(tmp.path(), "small.txt", b"small\n");
    let big_arg = format!("file=@{}", tmp.path().join("big.bin").display());
    let small_arg = format!("file=@{}", tmp.path().join("small.txt").display());

    // Off: no form on the page, and a post is refused.
    let srv = Server::start(&root, &[]);
    let (page, code) = curl(&[&format!("http://{}/", srv.host())]);
    assert_eq!(code, "200");
    assert!(!page.contains("id=\"upload\""), "{page}");
    let (body, code) = curl(&["-F", &small_arg, &format!("http://{}/", srv.host())]);
    assert_eq!(code, "403", "{body}");
    assert_eq!(snapshot(&root), vec![]);
    drop(srv);

    let srv = Server::start(&root, &["--upload", "--max-upload-size", "1M"]);
    let host = srv.host();
    let (page, _) = curl(&[&format!("http://{host}/")]);
    assert!(page.contains("id=\"upload\"") && page.contains("enctype=\"multipart/form-data\""));
    // Two files and a text field, as a script posts them: JSON.
    let (body, code) = curl(&[
        "-H",
        "Accept: application/json",
        "-F",
        &big_arg,
        "-F",
        &small_arg,
        "-F",
        "comment=hello",
        &format!("http://{host}/in/new/"),
    ]);
    assert_eq!(code, "201", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["saved"][0]["path"], "/in/new/big.bin", "{body}");
    assert_eq!(v["saved"][0]["size"], 700_000);
    assert_eq!(
        v["saved"][0]["blake3"],
        blake3::hash(&big).to_hex().as_str()
    );
    assert_eq!(fs::read(root.join("in/new/big.bin")).unwrap(), big);
    assert_eq!(fs::read(root.join("in/new/small.txt")).unwrap(), b"small\n");
    assert!(!root.join("in/new/comment").exists());
    // A plain form: redirected back to the listing.
    let (head, code) = curl(&[
        "-sS",
        "-i",
        "-F",
        &format!(
            "file=@{};filename=plain.txt",
            tmp.path().join("small.txt").display()
        ),
        &format!("http://{host}/in/"),
    ]);
    assert_eq!(code, "303", "{head}");
    assert!(
        head.to_ascii_lowercase().contains("location: /in/\r\n"),
        "{head}"
    );
    assert_eq!(fs::read(root.join("in/plain.txt")).unwrap(), b"small\n");
    // An existing name: 409, the file untouched, the others still saved.
    let (body, code) = form_post(
        &format!("http://{host}/in/"),
        &[(b"plain.txt", b"REPLACED"), (b"other.txt", b"other")],
        &[],
    );
    assert_eq!(code, "409", "{body}");
    assert!(body.contains("already exists"), "{body}");
    assert_eq!(fs::read(root.join("in/plain.txt")).unwrap(), b"small\n");
    assert_eq!(fs::read(root.join("in/other.txt")).unwrap(), b"other");
    // Another site's page, and a cross-site fetch: refused, nothing written.
    for h in [
        "Origin: http://evil.example",
        "Sec-Fetch-Site: cross-site",
        "Origin: null",
    ] {
        let (body, code) = form_post(&format!("http://{host}/"), &[(b"evil.txt", b"x")], &[h]);
        assert_eq!(code, "403", "{h}: {body}");
    }
    let same = format!("Origin: http://{host}");
    let (body, code) = form_post(
        &format!("http://{host}/"),
        &[(b"same.txt", b"ok")],
        &[&same],
    );
    assert_eq!(code, "201", "{body}");
    assert!(!root.join("evil.txt").exists());
    // Not a form; over the limit (known only as the bytes arrive).
    let (_, code) = curl(&["--data-binary", "abc", &format!("http://{host}/")]);
    assert_eq!(code, "415");
    let (body, code) = form_post(
        &format!("http://{host}/"),
        &[(b"huge.bin", &random_bytes(1_100_000, 32))],
        &[],
    );
    assert_eq!(code, "413", "{body}");
    assert!(!root.join("huge.bin").exists());
    // A body cut short mid-file: nothing under the name, no temporary.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&random_bytes(300_000, 33)).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
    }
    // The server finishes with the cut body on its own schedule: bounded wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while temps_in(&root) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!root.join("cut.bin").exists());
    assert_eq!(temps_in(&root), 0);
    // The server still serves.
    let (body, code) = curl(&[&format!("http://{host}/in/other.txt")]);
    assert_eq!((body.as_str(), code.as_str()), ("other", "200"));
}
