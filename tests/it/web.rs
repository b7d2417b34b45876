//! Issue 13: `ferry get http(s)://…` against a real nginx (and ferry's own
//! HTTP front-end): resume with Range + If-Range after a kill, a file
//! changed between attempts restarting instead of splicing, a server that
//! ignores Range, redirects, a hostile Content-Disposition name, errors,
//! HTTPS with a throwaway CA, and verification by --sha256, --blake3 and
//! ferry's own BLAKE3 header.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use crate::tls::Ca;

/// An nginx serving `root` on 127.0.0.1, killed on drop.
pub(crate) struct Nginx {
    child: Child,
    pub(crate) port: u16,
    _prefix: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx on a free port with `extra` inside its `server` block
    /// (`tls`: certificate and key, for `ssl`).
    pub(crate) fn start(
        nginx: &Path,
        root: &Path,
        extra: &str,
        tls: Option<(&Path, &Path)>,
    ) -> Nginx {
        // nginx cannot report a port it chose: take a free one (retrying
        // if another process took it in between).
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let prefix = tempfile::tempdir().unwrap();
            let ssl = match tls {
                Some((c, k)) => format!(
                    " ssl; ssl_certificate {}; ssl_certificate_key {}",
                    c.display(),
                    k.display()
                ),
                None => String::new(),
            };
            let conf = format!(
                "daemon off; master_process off; worker_processes 1; pid {p}/nginx.pid;\n\
                 error_log {p}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{ access_log off; client_body_temp_path {p}; proxy_temp_path {p};\n\
                   fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};\n\
                   server {{ listen 127.0.0.1:{port}{ssl}; root {root}; {extra} }} }}\n",
                p = prefix.path().display(),
                root = root.display(),
            );
            let conf_path = prefix.path().join("nginx.conf");
            fs::write(&conf_path, conf).unwrap();
            let child = Command::new(nginx)
                .args(["-p", prefix.path().to_str().unwrap(), "-c"])
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let mut n = Nginx {
                child,
                port,
                _prefix: prefix,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return n;
                }
                if let Ok(Some(_)) = n.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = n.child.kill();
        }
        panic!("nginx did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    ferry::display::hex(&sha2::Sha256::digest(data))
}

/// Kills `ferry get URL` once its `.part` holds some bytes (bounded wait).
fn kill_once_partial(cwd: &Path, url: &str, part: &Path) {
    let mut child = ferry_spawn(cwd, &["get", url, "-o", "out/", "-q"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if fs::metadata(part).is_ok_and(|m| m.len() > 0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn http_get_from_nginx_resumes_verifies_and_restarts_when_the_file_changed() {
    let Some(nginx) = tool("nginx") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let data = random_bytes(24 << 20, 41);
    write_file(&root, "big.bin", &data);
    write_file(&root, "new/place.bin", b"moved here\n");
    // Slow enough (8 MiB/s) that a kill lands mid-file.
    let srv = Nginx::start(
        &nginx,
        &root,
        "limit_rate 8m; location = /old { return 302 /new/place.bin; } \
         location = /loop { return 302 /loop; } \
         location /dl/ { alias ROOT/; add_header Content-Disposition 'attachment; filename=\"../../evil.txt\"'; }"
            .replace("ROOT", root.to_str().unwrap())
            .as_str(),
        None,
    );
    let url = srv.url("/big.bin");
    let part = tmp.path().join("out/big.bin.part");
    fs::create_dir_all(tmp.path().join("out")).unwrap();

    // Killed mid-file, then the same command: resumed, verified.
    kill_once_partial(tmp.path(), &url, &part);
    let kept = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    assert!(kept > 0 && kept < data.len() as u64, "kept {kept}");
    let meta = fs::read_to_string(tmp.path().join("out/big.bin.part.meta")).unwrap();
    assert!(
        meta.contains("if_range=\""),
        "nginx's ETag recorded: {meta}"
    );
    let r = ferry(
        tmp.path(),
        &["get", &url, "-o", "out/", "--sha256", &sha256_hex(&data)],
    )
    .ok();
    assert!(
        r.stderr.contains("resumed at") && r.stderr.contains("verified (--sha256)"),
        "{r}"
    );
    assert!(fs::read(tmp.path().join("out/big.bin")).unwrap() == data);
    assert!(!part.exists());

    // Killed again; the file changes on the server (same size); the re-run
    // starts over (If-Range no longer matches) and gets the new bytes only.
    fs::remove_file(tmp.path().join("out/big.bin")).unwrap();
    kill_once_partial(tmp.path(), &url, &part);
    assert!(part.exists());
    let changed = random_bytes(24 << 20, 42);
    std::thread::sleep(Duration::from_millis(1100)); // a new Last-Modified second
    write_file(&root, "big.bin", &changed);
    let r = ferry(
        tmp.path(),
        &["get", &url, "-o", "out/", "--sha256", &sha256_hex(&changed)],
    )
    .ok();
    assert!(r.stderr.contains("started over"), "{r}");
    assert!(
        fs::read(tmp.path().join("out/big.bin")).unwrap() == changed,
        "two versions spliced"
    );

    // A wrong --sha256: refused, nothing under the name.
    let r = ferry(
        tmp.path(),
        &[
            "get",
            &url,
            "-o",
            "out/wrong.bin",
            "--sha256",
            &"0".repeat(64),
        ],
    )
    .fails();
    assert!(r.stderr.contains("hash mismatch"), "{r}");
    assert!(!tmp.path().join("out/wrong.bin").exists());
    // Without a hash to check: saved, and said "not verified".
    // (Saved under the URL's own name, as curl -O and wget do.)
    let r = ferry(tmp.path(), &["get", &srv.url("/old"), "-o", "out/"]).ok();
    assert!(r.stderr.contains("not verified"), "{r}");
    assert_eq!(
        fs::read(tmp.path().join("out/old")).unwrap(),
        b"moved here\n"
    );
    // A redirect loop, a 404: one line each, exit 1.
    let r = ferry(tmp.path(), &["get", &srv.url("/loop"), "-o", "out/"]).fails();
    assert!(r.stderr.contains("more than 10 redirects"), "{r}");
    let r = ferry(tmp.path(), &["get", &srv.url("/missing.bin"), "-o", "out/"]).fails();
    assert!(r.stderr.contains("HTTP 404"), "{r}");
    // A hostile Content-Disposition: only its last component, inside -o.
    let r = ferry(
        tmp.path(),
        &["get", &srv.url("/dl/new/place.bin"), "-o", "out/"],
    )
    .ok();
    assert!(tmp.path().join("out/evil.txt").exists(), "{r}");
    assert!(
        !tmp.path().join("evil.txt").exists()
            && !tmp.path().parent().unwrap().join("evil.txt").exists()
    );
    eprintln!("FIGURE http get from nginx: killed at {kept} of {} bytes, resumed and verified; a changed file started over", data.len());
}

#[test]
fn https_get_trusts_the_given_ca_and_refuses_an_unknown_one() {
    let Some(nginx) = tool("nginx") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let data = random_bytes(3 << 20, 43);
    write_file(&root, "f.bin", &data);
    let ca = Ca::new();
    let (cert, key) = ca.leaf(tmp.path(), "localhost", &["localhost", "127.0.0.1"], false);
    let ca_pem = ca.write(tmp.path());
    let srv = Nginx::start(&nginx, &root, "", Some((&cert, &key)));
    let url = format!("https://localhost:{}/f.bin", srv.port);
    let r = ferry(
        tmp.path(),
        &[
            "get",
            &url,
            "-o",
            "out/",
            "--cacert",
            ca_pem.to_str().unwrap(),
            "--sha256",
            &sha256_hex(&data),
        ],
    )
    .ok();
    assert!(r.stderr.contains("verified (--sha256)"), "{r}");
    assert!(fs::read(tmp.path().join("out/f.bin")).unwrap() == data);
    // The system's roots do not know this CA.
    let r = ferry(tmp.path(), &["get", &url, "-o", "out/again.bin"]).fails();
    assert!(
        r.stderr.contains("TLS") && r.stderr.contains("certificate"),
        "{r}"
    );
    assert!(!tmp.path().join("out/again.bin").exists());
    // --pin: exactly this certificate, whoever signed it; another refused.
    if let Some(openssl) = tool("openssl") {
        let out = Command::new(openssl)
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(&cert)
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        let fp: String = line
            .split('=')
            .nth(1)
            .unwrap_or("")
            .trim()
            .replace(':', "")
            .to_lowercase();
        assert_eq!(fp.len(), 64, "{line}");
        let pin = format!("sha256:{fp}");
        let r = ferry(
            tmp.path(),
            &["get", &url, "-o", "out/pinned.bin", "--pin", &pin],
        )
        .ok();
        assert!(
            fs::read(tmp.path().join("out/pinned.bin")).unwrap() == data,
            "{r}"
        );
        let wrong = format!("sha256:{}", "ab".repeat(32));
        let r = ferry(
            tmp.path(),
            &["get", &url, "-o", "out/wrong-pin.bin", "--pin", &wrong],
        )
        .fails();
        assert!(!tmp.path().join("out/wrong-pin.bin").exists(), "{r}");
    }
}

#[test]
fn http_get_from_ferry_checks_its_blake3_and_a_server_ignoring_range_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let data = random_bytes(5 << 20, 44);
    write_file(&root, "f.bin", &data);
    // The server keeps no hash of a file changed in the last 2 s (its
    // ctime; see docs/RELIABILITY.md): let it age.
    std::thread::sleep(Duration::from_millis(2100));
    let srv = Server::start_logging(&root, &[], Some("ferry=debug"));
    // A native get makes the server hash the file; HTTP then carries it.
    ferry(
        tmp.path(),
        &["get", &srv.host(), "f.bin", "-o", "native.bin", "-q"],
    )
    .ok();
    let url = format!("http://{}/f.bin", srv.host());
    let r = ferry(tmp.path(), &["get", &url, "-o", "out/"]).ok();
    assert!(
        r.stderr.contains("verified (BLAKE3 from the server)"),
        "{r}"
    );
    let hex = blake3::hash(&data).to_hex().to_string();
    let r = ferry(
        tmp.path(),
        &["get", &url, "-o", "out/b.bin", "--blake3", &hex],
    )
    .ok();
    assert!(r.stderr.contains("verified (--blake3)"), "{r}");
    // -r over HTTP walks the JSON listings: the tree recreated, and a
    // re-run skips what is there.
    write_file(&root, "t/a.txt", b"a\n");
    write_file(&root, "t/sub/b.bin", &data[..100_000]);
    let get_tree = || {
        ferry(
            tmp.path(),
            &[
                "get",
                "-r",
                &format!("http://{}/t", srv.host()),
                "-o",
                "tree",
            ],
        )
        .ok()
    };
    let r = get_tree();
    assert_eq!(
        fs::read(tmp.path().join("tree/t/a.txt")).unwrap(),
        b"a\n",
        "{r}"
    );
    assert!(fs::read(tmp.path().join("tree/t/sub/b.bin")).unwrap() == data[..100_000]);
    // Over one kept-alive connection: two listings and two files.
    let most = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        most_requests_on_one_connection(&srv.stderr()) >= 4
    });
    assert!(
        most,
        "-r opened a connection per request:\n{}",
        srv.stderr()
    );
    let again = get_tree();
    assert!(!again.stderr.contains("saved"), "{again}");
    // `ls` over HTTP reads the JSON listing: the same lines as natively.
    let native = ferry(tmp.path(), &["ls", &srv.host()]).ok().stdout;
    let web = ferry(tmp.path(), &["ls", &format!("http://{}/", srv.host())])
        .ok()
        .stdout;
    assert_eq!(web, native);
    assert!(web.contains("f.bin"), "{web}");
    // python's http.server ignores Range: a kept part is not spliced.
    let py = PathBuf::from("/usr/bin/python3");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(&py)
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "-d",
        ])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::create_dir_all(tmp.path().join("py")).unwrap();
    // A part of garbage, recorded as if from this server.
    fs::write(tmp.path().join("py/f.bin.part"), vec![b'X'; 1000]).unwrap();
    let meta = format!(
        "ferry-part 2\nsize={}\nmtime_ns=0\nif_range=Thu, 01 Jan 2026 00:00:00 GMT\n",
        data.len()
    );
    fs::write(tmp.path().join("py/f.bin.part.meta"), meta).unwrap();
    let r = ferry(
        tmp.path(),
        &[
            "get",
            &format!("http://127.0.0.1:{port}/f.bin"),
            "-o",
            "py/",
            "--blake3",
            &hex,
        ],
    )
    .ok();
    // And it is no ferry server: `ls` says so.
    let ls = ferry(tmp.path(), &["ls", &format!("http://127.0.0.1:{port}/")]).fails();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ls.stderr.contains("not a ferry listing"), "{ls}");
    assert!(r.stderr.contains("started over"), "{r}");
    assert!(fs::read(tmp.path().join("py/f.bin")).unwrap() == data);
}

/// `-j 4` from nginx, as aria2 would: killed mid-way, the re-run continues
/// each range (If-Range on every one); killed again and the file changed
/// on the server, the re-run starts over and never splices.
#[test]
fn http_split_download_resumes_its_ranges_and_restarts_when_the_file_changed() {
    let Some(nginx) = tool("nginx") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("www");
    let data = random_bytes(32 << 20, 45);
    write_file(&root, "big.bin", &data);
    let srv = Nginx::start(&nginx, &root, "limit_rate 3m;", None);
    let url = srv.url("/big.bin");
    let meta = tmp.path().join("out/big.bin.part.meta");
    fs::create_dir_all(tmp.path().join("out")).unwrap();
    let run_killed = || {
        let mut child = ferry_spawn(tmp.path(), &["get", "-j", "4", &url, "-o", "out/", "-q"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && recorded_progress(&meta).is_none_or(|n| n < 4 << 20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        recorded_progress(&meta).unwrap_or(0)
    };
    let kept = run_killed();
    assert!(kept >= 4 << 20, "kept {kept}");
    let r = ferry(
        tmp.path(),
        &[
            "get",
            "-j",
            "4",
            &url,
            "-o",
            "out/",
            "--sha256",
            &sha256_hex(&data),
        ],
    )
    .ok();
    assert!(
        r.stderr.contains("of it resumed from the .part")
            && r.stderr.contains("verified (--sha256)"),
        "{r}"
    );
    assert!(fs::read(tmp.path().join("out/big.bin")).unwrap() == data);
    assert!(!meta.exists());

    fs::remove_file(tmp.path().join("out/big.bin")).unwrap();
    let kept2 = run_killed();
    assert!(kept2 > 0);
    let changed = random_bytes(32 << 20, 46);
    std::thread::sleep(Duration::from_millis(1100));
    write_file(&root, "big.bin", &changed);
    let r = ferry(
        tmp.path(),
        &[
            "get",
            "-j",
            "4",
            &url,
            "-o",
            "out/",
            "--sha256",
            &sha256_hex(&changed),
        ],
    )
    .ok();
    assert!(r.stderr.contains("started over"), "{r}");
    assert!(
        fs::read(tmp.path().join("out/big.bin")).unwrap() == changed,
        "two versions spliced"
    );
    eprintln!("FIGURE http -j 4 from nginx: killed with {kept} bytes of ranges kept, resumed and verified; a changed file started over");
}

/// The request counts of the server's finished HTTP connections (its
/// `disconnected: http: N request(s)` lines).
fn requests_per_connection(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|l| l.split("disconnected: http: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .collect()
}

/// `-j 4` over HTTP: the probe (a request for the first byte) leaves its
/// kept-alive connection to a lane, which fetches a range over it, instead
/// of a fifth connection being opened.
#[test]
fn http_split_download_reuses_the_probes_connection() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let data = random_bytes(16 << 20, 47);
    write_file(&root, "big.bin", &data);
    let srv = Server::start_logging(&root, &[], Some("ferry=debug"));
    let url = format!("http://{}/big.bin", srv.host());
    let r = ferry(tmp.path(), &["get", "-j", "4", &url, "-o", "out/"]).ok();
    assert!(
        fs::read(tmp.path().join("out/big.bin")).unwrap() == data,
        "{r}"
    );
    // Access lines: `conn{peer=ADDR}: ...: HTTP method=GET ... status=206 bytes=N ...`.
    let log = srv.stderr();
    let access: Vec<(&str, &str)> = log
        .lines()
        .filter(|l| l.contains(": HTTP method=") && l.contains(" status="))
        .filter_map(|l| {
            let peer = l.split("conn{peer=").nth(1)?.split('}').next()?;
            Some((peer, l))
        })
        .collect();
    let probe = access
        .iter()
        .find(|(_, l)| l.contains("status=206 bytes=1 "))
        .map(|(peer, _)| *peer)
        .unwrap_or_else(|| panic!("no probe in the log:\n{log}"));
    let on_probes = access.iter().filter(|(peer, _)| *peer == probe).count();
    assert!(
        on_probes >= 2,
        "the probe's connection carried {on_probes} request(s)\n{log}"
    );
}

/// `-j 4` over HTTP with one connection slow (the first the relay
/// accepts, 2 MiB/s; the others unthrottled): the free lanes take over the
/// end of its 8 MiB range, as with the native protocol.
#[test]
fn http_split_download_shares_out_a_slow_connections_range() {
    const MIB: u64 = 1 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let data = random_bytes(32 << 20, 48);
    write_file(&root, "big.bin", &data);
    let srv = Server::start(&root, &[]);
    let proxy = SlowProxy::start_rates(srv.addr, |k| (k == 0).then_some(2 * MIB));
    let url = format!("http://{}/big.bin", proxy.host());
    let r = ferry(tmp.path(), &["get", "-j", "4", &url, "-o", "out/"]).ok();
    assert!(
        fs::read(tmp.path().join("out/big.bin")).unwrap() == data,
        "{r}"
    );
    let down = proxy.down();
    assert!(
        down.first().is_some_and(|&n| n < 7 * MIB),
        "the slow connection carried most of an 8 MiB range: {down:?}"
    );
    eprintln!("FIGURE http -j 4 with one connection at 2 MiB/s: bytes per connection {down:?}");
}

/// `-r -j N` over HTTP spreads a tree's files over N kept-alive
/// connections, each carrying several requests, and saves every file.
#[test]
fn http_get_r_with_jobs_spreads_the_files_over_kept_alive_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| {
            (
                format!("t/d{}/f{i}.bin", i % 3),
                random_bytes(200_000 + i * 1000, 900 + i as u64),
            )
        })
        .collect();
    for (name, data) in &files {
        write_file(&root, name, data);
    }
    let srv = Server::start_logging(&root, &[], Some("ferry=debug"));
    let url = format!("http://{}/t", srv.host());
    let r = ferry(tmp.path(), &["get", "-r", "-j", "3", &url, "-o", "tree"]).ok();
    for (name, data) in &files {
        let got = fs::read(tmp.path().join("tree").join(name)).unwrap();
        assert!(got == *data, "{name} differs\n{r}");
    }
    assert_eq!(r.stderr.matches("saved ").count(), 12, "{r}");
    // 4 listings and 12 files over three connections (the first worker
    // goes on with the walk's; each worker takes a file at once, then
    // whatever is left when it is free, so how many each gets varies).
    let busy = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
        requests_per_connection(&srv.stderr()).iter().sum::<usize>() >= 16
    });
    let counts = requests_per_connection(&srv.stderr());
    assert!(busy, "fewer connections than expected: {counts:?}");
    assert!(
        counts.len() >= 3 && counts.iter().any(|&n| n >= 5),
        "files were not spread over three connections, the walk's kept alive: {counts:?}"
    );
    assert_eq!(counts.iter().sum::<usize>(), 16, "{counts:?}");
    let again = ferry(tmp.path(), &["get", "-r", "-j", "3", &url, "-o", "tree"]).ok();
    assert!(!again.stderr.contains("saved"), "{again}");
}

fn most_requests_on_one_connection(log: &str) -> usize {
    log.lines()
        .filter_map(|l| l.split("disconnected: http: ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// `-o -` over HTTP: the bytes on standard output, checked against the
/// server's hash or `--blake3`; a mismatch turns the exit status non-zero.
#[test]
fn http_get_to_stdout_is_checked_when_there_is_a_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(3 << 20, 45);
    write_file(tmp.path(), "f.bin", &data);
    let srv = Server::start(tmp.path(), &[]);
    let url = format!("http://{}/f.bin", srv.host());
    // A native get makes the server hash the file; HTTP then carries it.
    ferry(
        tmp.path(),
        &["get", &srv.host(), "f.bin", "-o", "n.bin", "-q"],
    )
    .ok();
    let out = std::process::Command::new(ferry_bin())
        .args(["get", &url, "-o", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == data, "stdout differs");
    let wrong = "0".repeat(64);
    let r = ferry(tmp.path(), &["get", &url, "-o", "-", "--blake3", &wrong]).fails();
    assert!(r.stderr.contains("mismatch"), "{r}");
    let right = blake3::hash(&data).to_hex().to_string();
    ferry(tmp.path(), &["get", &url, "-o", "-", "--blake3", &right]).ok();
}
