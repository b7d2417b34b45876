//! Issue 14, point 1: `ferry serve s3://BUCKET/PREFIX` against a real
//! Garage (started by `deploy/garage.sh`), files loaded with a standard S3
//! client (rclone), never through ferry. Every protocol serves the same
//! bytes; no request reaches a key outside the prefix; a download cut on
//! one node resumes on another over the same bucket, and a rewritten
//! object starts over instead of splicing; a hash computed by one node is
//! found by the others in the store; health follows the store.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::hostile::NativeAnswer;
use crate::hostile::{contains, http_body, http_get, native_get, raw_get_bytes, url_path};
use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(60);

/// A node serving `s3://ferry/pub` of `g`, with extra flags.
fn node(g: &Garage, cwd: &Path, extra: &[&str]) -> Server {
    Server::start_url("s3://ferry/pub", cwd, extra, &g.env_pairs())
}

fn curl_bytes(url: &str, extra: &[&str]) -> Vec<u8> {
    let curl = tool("curl").expect("curl");
    let out = Command::new(curl)
        .args(["-sSf", "--max-time", "60"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The peak resident memory of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_bucket_is_served_over_every_protocol_and_lists_like_a_directory() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let big = random_bytes(64 << 20, 1401);
    let small = b"hello from the bucket\n".to_vec();
    let odd = b"a name with spaces, brackets and CJK\n".to_vec();
    g.put("pub/big.bin", &big);
    g.put("pub/dir/small.txt", &small);
    g.put("pub/dir/deeper/z.txt", b"z\n");
    g.put("pub/名字 [1] 100%.txt", &odd);
    g.put("pub/.hidden", b"not shared\n");
    g.put("outside.txt", b"outside the prefix\n");
    let srv = node(&g, tmp.path(), &[]);
    assert!(
        srv.startup.contains("serving s3://ferry/pub"),
        "{}",
        srv.startup
    );
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();

    // Native, verified.
    let run = ferry(&out, &["get", &srv.host(), "big.bin"]).ok();
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(
        fs::read(out.join("big.bin")).unwrap() == big,
        "native bytes"
    );
    ferry(&out, &["get", &srv.host(), "名字 [1] 100%.txt", "-q"]).ok();
    assert_eq!(fs::read(out.join("名字 [1] 100%.txt")).unwrap(), odd);
    // A tree.
    ferry(&out, &["get", "-r", &srv.host(), "dir", "-q"]).ok();
    assert_eq!(fs::read(out.join("dir/small.txt")).unwrap(), small);
    assert_eq!(fs::read(out.join("dir/deeper/z.txt")).unwrap(), b"z\n");
    // HTTP: whole, a range, the listing.
    let url = format!("http://{}/big.bin", srv.host());
    assert!(curl_bytes(&url, &[]) == big, "HTTP bytes");
    let part = curl_bytes(&url, &["-r", "1000-1999"]);
    assert_eq!(&part[..], &big[1000..2000]);
    let enc = format!(
        "http://{}/%E5%90%8D%E5%AD%97%20%5B1%5D%20100%25.txt",
        srv.host()
    );
    assert_eq!(curl_bytes(&enc, &[]), odd);
    let json = String::from_utf8(curl_bytes(
        &format!("http://{}/", srv.host()),
        &["-H", "Accept: application/json"],
    ))
    .unwrap();
    for name in ["big.bin", "dir", "名字 [1] 100%.txt"] {
        assert!(
            json.contains(&format!("\"{name}")),
            "{name} not listed: {json}"
        );
    }
    assert!(
        !json.contains(".hidden") && !json.contains(".ferry"),
        "{json}"
    );
    assert!(!json.contains("outside"), "{json}");
    // A tar of a directory, streamed from the store.
    let tar = curl_bytes(&format!("http://{}/dir/?archive=tar", srv.host()), &[]);
    assert!(contains(&tar, &small), "the tar lacks dir/small.txt");
    // The tutorial's protocol.
    ferry(
        &out,
        &[
            "get",
            "--tutorial",
            &srv.host(),
            "big.bin",
            "-o",
            "raw.bin",
            "-q",
        ],
    )
    .ok();
    assert!(
        fs::read(out.join("raw.bin")).unwrap() == big,
        "tutorial bytes"
    );
    // Hidden and missing.
    let run = ferry(&out, &["get", &srv.host(), ".hidden"]).fails();
    assert!(run.stderr.contains("no such file"), "{run}");
    let ls = ferry(&out, &["ls", &srv.host()]).ok();
    assert!(
        ls.stdout.contains("big.bin") && !ls.stdout.contains(".hidden"),
        "{ls}"
    );

    // Inside TLS too (every protocol rides it unchanged).
    let state = tmp.path().join("state");
    let tls = Server::start_url(
        "s3://ferry/pub",
        tmp.path(),
        &["--tls"],
        &[
            g.env_pairs(),
            vec![("XDG_STATE_HOME", state.to_str().unwrap())],
        ]
        .concat(),
    );
    let pin = crate::tls::fingerprint_of(&tls);
    ferry(
        &out,
        &[
            "get",
            "--pin",
            &pin,
            &tls.host(),
            "big.bin",
            "-o",
            "tls.bin",
            "-q",
        ],
    )
    .ok();
    assert!(fs::read(out.join("tls.bin")).unwrap() == big, "TLS bytes");
    let https = curl_bytes(&format!("https://{}/dir/small.txt", tls.host()), &["-k"]);
    assert_eq!(https, small);

    // Streamed: the server never holds an object, nor most of one.
    let peak = peak_rss_kib(srv.pid());
    assert!(
        peak < 64 * 1024,
        "ferry serve peaked at {peak} KiB serving a 64 MiB object three times"
    );
    println!("FIGURE object backend: 64 MiB object over native, HTTP and the tutorial's protocol (and native and HTTPS over TLS from a second node); server peak RSS {peak} KiB");
}

#[test]
fn no_request_reaches_a_key_outside_the_prefix() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let secret = b"FERRY-OBJECT-SECRET-never-served\n";
    g.put("secret.txt", secret);
    g.put("pub2/secret.txt", secret);
    g.put("pub/x", b"x inside\n");
    g.put("pub/a/inside.txt", b"inside\n");
    g.put("pub/...", b"a key really named ...\n");
    let srv = node(&g, tmp.path(), &["--hidden"]);
    // Make the reserved prefix exist: a download stores its hash there.
    ferry(tmp.path(), &["get", &srv.host(), "x", "-o", "x", "-q"]).ok();
    let keys = g.rclone(&["lsf", "-R", "g:ferry/pub/.ferry"]);
    assert!(
        keys.contains("blake3/"),
        "no hash kept in the store: {keys}"
    );

    #[rustfmt::skip]
    let spellings: Vec<&[u8]> = vec![
        b"..", b"../secret.txt", b"../pub2/secret.txt", b"a/../../secret.txt",
        b"./../secret.txt", b"x/..", b"/secret.txt", b"//secret.txt",
        b"a//../../secret.txt", b"..\\secret.txt", b"\\..\\secret.txt",
        b"a\\..\\..\\secret.txt", b"x\0/../../secret.txt", b"..\0/secret.txt",
        b"%2e%2e/secret.txt", b"%2e%2e%2fsecret.txt", b"%252e%252e/secret.txt",
        b"..%c0%afsecret.txt", b"\xc0\xae\xc0\xae/secret.txt", b"\xff\xfe/../secret.txt",
        "\u{ff0e}\u{ff0e}/secret.txt".as_bytes(), "..\u{2215}secret.txt".as_bytes(),
        b"..;/secret.txt", b".../../secret.txt", b"../secret.txt.", b".. /secret.txt",
        b"~/../secret.txt", b"file:///secret.txt", b"s3://ferry/secret.txt",
        b"pub2/secret.txt", b"../pub2", b".ferry", b".ferry/blake3",
        b"", b".",
    ];
    let mut refused = 0;
    for path in &spellings {
        let shown = String::from_utf8_lossy(path).into_owned();
        let (answer, all) = native_get(srv.addr, path);
        assert!(
            !contains(&all, secret),
            "{shown:?}: native leaks the secret"
        );
        if let NativeAnswer::File(body) = &answer {
            panic!("{shown:?}: native served {} bytes", body.len());
        }
        for target in [url_path(path, true), url_path(path, false)] {
            let (status, all) = http_get(srv.addr, &target);
            assert!(!contains(&all, secret), "{shown:?}: HTTP {target} leaks");
            // A listing of the prefix itself (`/`, `/.`) is the only 200.
            assert!(
                (400..500).contains(&status)
                    || (status == 200 && http_body(&all).starts_with(b"<!doctype"))
                    || status == 301,
                "{shown:?}: HTTP {target} answered {status}"
            );
        }
        let raw = raw_get_bytes(srv.addr, path);
        assert!(!contains(&raw, secret), "{shown:?}: tutorial leaks");
        assert!(
            raw.is_empty(),
            "{shown:?}: tutorial sent {} bytes",
            raw.len()
        );
        refused += 1;
    }
    // The reserved prefix is neither listed nor served, even with --hidden.
    let ls = ferry(tmp.path(), &["ls", &srv.host()]).ok();
    assert!(!ls.stdout.contains(".ferry"), "{ls}");
    // Keys that no path can name, written past any ordinary client: never
    // reachable; the node stays healthy and keeps serving the rest.
    let client = g.client();
    client.put_raw_key("pub/../up.txt", secret);
    client.put_raw_key("pub/a//b.txt", secret);
    client.put_raw_key("pub/./dot.txt", secret);
    for path in [
        &b"../up.txt"[..],
        b"up.txt",
        b"a//b.txt",
        b"a/b.txt",
        b"./dot.txt",
        b"dot.txt",
    ] {
        let (_, all) = native_get(srv.addr, path);
        assert!(!contains(&all, secret), "{path:?}: native leaks a raw key");
        let (_, all) = http_get(srv.addr, &url_path(path, false));
        assert!(!contains(&all, secret), "{path:?}: HTTP leaks a raw key");
    }
    assert_eq!(http_get(srv.addr, "/_ferry/health").0, 200);
    ferry(
        tmp.path(),
        &["get", &srv.host(), "a/inside.txt", "-o", "in", "-q"],
    )
    .ok();
    // Look-alikes that are real keys inside are served as themselves.
    let run = ferry(tmp.path(), &["get", &srv.host(), "...", "-o", "dots", "-q"]).ok();
    drop(run);
    assert_eq!(
        fs::read(tmp.path().join("dots")).unwrap(),
        b"a key really named ...\n"
    );
    assert!(srv.stderr().lines().all(|l| !l.contains("panicked")));
    println!(
        "FIGURE object traversal: {refused} spellings, each over native, HTTP (2 targets) and the tutorial's protocol: all refused, the secret never served"
    );
}

/// Starts `ferry get HOST big.bin` through a slow relay to `victim`, and
/// SIGKILLs it once at least `at` bytes are in the `.part`: the
/// client is left with a partial download. Returns its bytes.
fn cut_download(out: &Path, victim: &mut Server, at: u64, http: bool) -> u64 {
    let slow = SlowProxy::start(victim.addr, 8 << 20);
    let url = format!("http://{}/big.bin", slow.addr);
    let child = if http {
        ferry_spawn(out, &["get", &url])
    } else {
        ferry_spawn(out, &["get", &slow.addr.to_string(), "big.bin"])
    };
    let part = out.join("big.bin.part");
    let reached = wait_until(PATIENCE, Duration::from_millis(10), || {
        part.exists() && file_len(&part) >= at
    });
    victim.kill();
    let run = finish(child, None, "ferry get through a slow relay".into());
    assert!(reached, "the download never reached {at} bytes\n{run}");
    assert!(!run.status.success(), "the cut download succeeded?\n{run}");
    assert!(!out.join("big.bin").exists(), "a cut download was saved");
    file_len(&part)
}

#[test]
fn a_download_cut_on_one_node_resumes_on_another_and_a_rewritten_object_starts_over() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let v1 = random_bytes(24 << 20, 1402);
    g.put("pub/big.bin", &v1);
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();

    // Cut on node A, resumed on node B: the validators agree across nodes.
    let mut a = node(&g, tmp.path(), &[]);
    let b = node(&g, tmp.path(), &[]);
    let had = cut_download(&out, &mut a, 4 << 20, false);
    let run = ferry(&out, &["get", &b.host(), "big.bin"]).ok();
    assert!(
        run.stderr.contains(&format!("resumed at {had}")) || run.stderr.contains("resumed at"),
        "node B did not resume the part node A left:\n{run}"
    );
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(
        fs::read(out.join("big.bin")).unwrap() == v1,
        "resumed bytes"
    );
    println!(
        "FIGURE cross-node resume: {had} of {} bytes from node A, the rest from node B",
        v1.len()
    );

    // Cut again, then the object is rewritten (same size) before the
    // resume: node B must start over, never splice the two versions.
    fs::remove_file(out.join("big.bin")).unwrap();
    let mut c = node(&g, tmp.path(), &[]);
    let had = cut_download(&out, &mut c, 4 << 20, false);
    let mut v2 = v1.clone();
    for (i, byte) in v2.iter_mut().enumerate().step_by(4096) {
        *byte = byte.wrapping_add(1 + (i % 7) as u8);
    }
    g.put("pub/big.bin", &v2);
    let run = ferry(&out, &["get", &b.host(), "big.bin"]).ok();
    assert!(
        run.stderr.contains("started over"),
        "no restart after a rewrite:\n{run}"
    );
    assert!(run.stderr.contains("verified"), "{run}");
    let got = fs::read(out.join("big.bin")).unwrap();
    assert!(
        got == v2,
        "a rewritten object was spliced or stale (had {had} bytes of v1)"
    );

    // Over HTTP too: node D, which has served the object whole (so knows
    // its hash, and says it in its `ETag`), is cut; a node E that has
    // never seen the object resumes (`If-Range` with D's `ETag`, which E
    // must give too: it finds the hash B kept in the store).
    fs::remove_file(out.join("big.bin")).unwrap();
    let want = blake3::hash(&v2).to_hex().to_string();
    let kept = wait_until(PATIENCE, Duration::from_millis(100), || {
        g.rclone(&["cat", "g:ferry/pub/.ferry/blake3/"])
            .contains(&want)
    });
    assert!(kept, "the store does not hold v2's hash");
    let mut d = node(&g, tmp.path(), &[]);
    ferry(&out, &["get", &d.host(), "big.bin", "-o", "warm.bin", "-q"]).ok();
    let had = cut_download(&out, &mut d, 4 << 20, true);
    let e = node(&g, tmp.path(), &[]);
    let run = ferry(&out, &["get", &format!("http://{}/big.bin", e.host())]).ok();
    assert!(
        run.stderr.contains("resumed at"),
        "node E did not resume node D's part over HTTP:\n{run}"
    );
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(
        fs::read(out.join("big.bin")).unwrap() == v2,
        "HTTP resumed bytes"
    );
    println!("FIGURE cross-node HTTP resume: {had} bytes from node D, the rest from node E");
}

#[test]
fn a_hash_computed_by_one_node_is_found_by_the_others_in_the_store() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(8 << 20, 1403);
    g.put("pub/f.bin", &data);
    let a = node(&g, tmp.path(), &[]);
    let b = node(&g, tmp.path(), &[]);
    ferry(tmp.path(), &["get", &a.host(), "f.bin", "-o", "a.bin"]).ok();
    assert!(
        wait_until(PATIENCE, Duration::from_millis(50), || a
            .stderr()
            .contains("object hashed: pub/f.bin")),
        "node A did not say it hashed f.bin:\n{}",
        a.stderr()
    );
    // Read from the store once: hashed on its way to the client.
    let reads = a.stderr().matches("store read: pub/f.bin").count();
    assert_eq!(reads, 1, "node A read the object {reads} times");
    // Kept in the store (in the background, once the body has passed).
    let want = blake3::hash(&data).to_hex().to_string();
    let kept = wait_until(PATIENCE, Duration::from_millis(100), || {
        g.rclone(&["cat", "g:ferry/pub/.ferry/blake3/"])
            .contains(&want)
    });
    assert!(kept, "the store does not hold the hash");
    let run = ferry(tmp.path(), &["get", &b.host(), "f.bin", "-o", "b.bin"]).ok();
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(
        b.stderr()
            .contains("object hash found in the store: pub/f.bin"),
        "node B did not use the shared hash:\n{}",
        b.stderr()
    );
    assert!(!b.stderr().contains("object hashed"), "node B hashed again");
    // A stale entry (the object rewritten) is not believed.
    let other = random_bytes(8 << 20, 1404);
    g.put("pub/f.bin", &other);
    let c = node(&g, tmp.path(), &[]);
    let run = ferry(tmp.path(), &["get", &c.host(), "f.bin", "-o", "c.bin"]).ok();
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(fs::read(tmp.path().join("c.bin")).unwrap() == other);
    assert!(
        c.stderr().contains("object hashed: pub/f.bin"),
        "{}",
        c.stderr()
    );
}

#[test]
fn health_follows_the_store_and_a_bad_store_fails_at_startup() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    g.put("pub/x", b"x\n");
    let srv = node(&g, tmp.path(), &[]);
    let health = |srv: &Server| http_get(srv.addr, "/_ferry/health").0;
    assert_eq!(health(&srv), 200);
    g.stop();
    assert!(
        wait_until(PATIENCE, Duration::from_millis(200), || health(&srv) == 503),
        "health stayed up with the store gone"
    );
    // A wrong key is refused at startup, in one line naming the cause.
    let mut env = g.env.clone();
    for (k, v) in env.iter_mut() {
        if k == "AWS_ENDPOINT_URL" {
            *v = "http://127.0.0.1:9".into();
        }
    }
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = ferry_env(
        tmp.path(),
        &["serve", "s3://ferry/pub", "--port", "0"],
        &pairs,
    )
    .fails();
    assert!(run.stderr.contains("cannot serve s3://ferry/pub"), "{run}");
    // No keys for a store of one's own: said, not looked for elsewhere.
    let endpoint = g.var("AWS_ENDPOINT_URL");
    let run = ferry_env(
        tmp.path(),
        &["serve", "s3://ferry/pub", "--port", "0"],
        &[("AWS_ENDPOINT_URL", endpoint.as_str())],
    )
    .fails();
    assert!(run.stderr.contains("no credentials"), "{run}");
    let run = ferry_env(
        tmp.path(),
        &[
            "serve",
            "s3://ferry/pub",
            "--port",
            "0",
            "--s3-endpoint",
            "http://192.0.2.1:3900",
        ],
        &pairs,
    )
    .fails();
    assert!(run.stderr.contains("plain-HTTP"), "{run}");
}

/// `deploy/local-cluster.sh`'s cluster: Garage, `n` nodes serving
/// `s3://ferry`, HAProxy in front; stopped on drop.
struct Cluster {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    fn start(n: usize) -> Option<Cluster> {
        // Skips (or, in CI, fails) exactly when Garage is missing.
        drop(Garage::start()?);
        tool("haproxy")?;
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(dir.path())
            .args(["--nodes", &n.to_string()])
            .env("FERRY_BIN", ferry_bin())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run deploy/local-cluster.sh");
        let env = fs::read_to_string(dir.path().join("cluster.env")).unwrap_or_default();
        let c = Cluster {
            env: env
                .lines()
                .filter_map(|l| l.strip_prefix("export "))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            dir,
        };
        assert!(
            out.status.success(),
            "local-cluster.sh start failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(c)
    }

    fn var(&self, k: &str) -> String {
        self.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} missing from cluster.env"))
    }

    fn list(&self, k: &str) -> Vec<String> {
        self.var(k).split(',').map(str::to_string).collect()
    }

    fn stats(&self) -> Vec<Vec<String>> {
        haproxy_stat_rows(Path::new(&self.var("CLUSTER_STATS_SOCKET")))
    }

    /// Loads `data` as `key` with rclone, through the cluster's Garage.
    fn put(&self, key: &str, data: &[u8]) {
        S3Client(self.env.clone()).put(key, data);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/local-cluster.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .arg(self.dir.path())
            .stdin(std::process::Stdio::null())
            .output();
    }
}

#[test]
fn a_cluster_over_one_bucket_serves_every_protocol_and_survives_a_killed_node() {
    let Some(c) = Cluster::start(3) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let small = random_bytes(3 << 20, 1405);
    let big = random_bytes(64 << 20, 1406);
    c.put("a.bin", &small);
    c.put("big.bin", &big);
    let lb = c.var("CLUSTER_ADDR");
    let nodes = c.list("CLUSTER_NODES");
    assert_eq!(nodes.len(), 3);

    // Every protocol through HAProxy, spread over the nodes (leastconn).
    for i in 0..4 {
        let native = format!("native{i}.bin");
        ferry(tmp.path(), &["get", &lb, "a.bin", "-o", &native, "-q"]).ok();
        assert!(
            fs::read(tmp.path().join(&native)).unwrap() == small,
            "native {i}"
        );
        assert!(
            curl_bytes(&format!("http://{lb}/a.bin"), &[]) == small,
            "HTTP {i}"
        );
        let raw = format!("raw{i}.bin");
        ferry(
            tmp.path(),
            &["get", "--tutorial", &lb, "a.bin", "-o", &raw, "-q"],
        )
        .ok();
        assert!(
            fs::read(tmp.path().join(&raw)).unwrap() == small,
            "tutorial {i}"
        );
    }
    let served: Vec<u64> = c
        .stats()
        .iter()
        .map(|r| r.get(7).and_then(|v| v.parse().ok()).unwrap_or(0))
        .collect();
    assert!(
        served.iter().filter(|&&n| n > 0).count() >= 2,
        "HAProxy sent everything to one node: {served:?}"
    );

    // A node SIGKILLed mid-download: the client reconnects through HAProxy
    // and resumes on another node, verified. A slow relay in front of
    // HAProxy keeps the download long enough to be cut.
    let slow = SlowProxy::start(lb.parse().unwrap(), 16 << 20);
    let child = ferry_spawn(
        tmp.path(),
        &["get", "--retry", "5", &slow.addr.to_string(), "big.bin"],
    );
    let part = tmp.path().join("big.bin.part");
    let mid = wait_until(PATIENCE, Duration::from_millis(10), || {
        part.exists() && file_len(&part) >= 16 << 20
    });
    let rows = c.stats();
    let serving = rows
        .iter()
        .position(|r| r.get(4).is_some_and(|v| v != "0"))
        .expect("no node serving the download");
    let pid: u32 = c.list("CLUSTER_NODE_PIDS")[serving].parse().unwrap();
    let had = file_len(&part);
    sigkill(pid);
    let run = finish(
        child,
        None,
        "ferry get --retry 5 through the cluster".into(),
    );
    assert!(mid, "the download never reached 16 MiB\n{run}");
    assert_reconnected_and_resumed(&run);
    assert!(
        fs::read(tmp.path().join("big.bin")).unwrap() == big,
        "resumed bytes"
    );
    // Its health check takes the dead node out of rotation.
    let down = wait_until(PATIENCE, Duration::from_millis(200), || {
        c.stats()
            .get(serving)
            .and_then(|r| r.get(17))
            .is_some_and(|s| s.starts_with("DOWN"))
    });
    assert!(down, "HAProxy still sends clients to the killed node");
    ferry(tmp.path(), &["get", &lb, "a.bin", "-o", "after.bin", "-q"]).ok();
    println!(
        "FIGURE cluster: node {serving} of 3 SIGKILLed with {had} of {} bytes received; resumed through HAProxy, verified",
        big.len()
    );
}

#[test]
fn uploads_into_the_bucket_appear_whole_and_verified_or_not_at_all() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let srv = node(&g, tmp.path(), &["--upload", "--max-upload-size", "100M"]);
    assert!(srv.startup.contains("uploads on"), "{}", srv.startup);
    let big = random_bytes(20 << 20, 1407); // a multipart upload (8 MiB parts)
    let small = b"small upload\n".to_vec();
    write_file(tmp.path(), "big.bin", &big);
    write_file(tmp.path(), "small.txt", &small);
    write_file(tmp.path(), "empty", b"");
    let run = ferry(
        tmp.path(),
        &[
            "put",
            &srv.host(),
            "big.bin",
            "small.txt",
            "empty",
            "--to",
            "up",
        ],
    )
    .ok();
    assert!(
        run.stderr.contains("verified") || run.stderr.contains("uploaded"),
        "{run}"
    );
    // Read back with rclone, not ferry: the objects are in the bucket.
    let client = g.client();
    let cat = |key: &str| {
        let out = tmp.path().join("cat.out");
        client.rclone(&[
            "copyto",
            &format!("g:ferry/{key}"),
            &out.display().to_string(),
        ]);
        fs::read(&out).unwrap()
    };
    assert!(cat("pub/up/big.bin") == big, "the multipart object differs");
    assert_eq!(cat("pub/up/small.txt"), small);
    assert_eq!(cat("pub/up/empty"), b"");
    // The uploader's hash is kept for every node: a second node serves
    // the object without hashing it.
    let other = node(&g, tmp.path(), &[]);
    ferry(
        tmp.path(),
        &["get", &other.host(), "up/big.bin", "-o", "back.bin"],
    )
    .ok();
    assert!(fs::read(tmp.path().join("back.bin")).unwrap() == big);
    assert!(
        other
            .stderr()
            .contains("object hash found in the store: pub/up/big.bin"),
        "{}",
        other.stderr()
    );
    // No overwrite without --overwrite; curl -T works; a PUT whose
    // declared hash is wrong, or whose body is cut, leaves nothing.
    let run = ferry(tmp.path(), &["put", &srv.host(), "small.txt", "--to", "up"]).fails();
    assert!(run.stderr.contains("already exists"), "{run}");
    let curl = tool("curl").expect("curl");
    let small_path = tmp.path().join("small.txt").display().to_string();
    let big_path = tmp.path().join("big.bin").display().to_string();
    let put = |file: &str, target: &str, extra: &[&str]| {
        let url = format!("http://{}{target}", srv.host());
        let mut args = vec!["--path-as-is", "-T", file, url.as_str()];
        args.extend(extra);
        curl_writes(tmp.path(), &curl, "%{http_code}", &args)
    };
    assert_eq!(put(&small_path, "/curl.txt", &[]), "201");
    assert_eq!(cat("pub/curl.txt"), small);
    let wrong = format!("X-Ferry-Blake3: {}", "0".repeat(64));
    let code = put(&big_path, "/bad.bin", &["-H", &wrong]);
    assert!(code.starts_with('4'), "a wrong hash was answered {code}");
    let mut w = std::net::TcpStream::connect(srv.addr).unwrap();
    use std::io::Write;
    w.write_all(
        format!(
            "PUT /cut.bin HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            big.len()
        )
        .as_bytes(),
    )
    .unwrap();
    w.write_all(&big[..12 << 20]).unwrap();
    drop(w);
    let listing = g.rclone(&["lsf", "-R", "g:ferry/pub"]);
    assert!(
        !listing.contains("bad.bin"),
        "a mismatched upload appeared: {listing}"
    );
    assert!(
        !listing.contains("cut.bin"),
        "a cut upload appeared: {listing}"
    );
    // Hidden names and keys outside the prefix are refused as targets.
    for target in ["/.hidden", "/%2e%2e/escape.txt", "/.ferry/blake3/x"] {
        let code = put(&small_path, target, &[]);
        assert!(code.starts_with('4'), "PUT {target} answered {code}");
    }
    let all = g.rclone(&["lsf", "-R", "g:ferry"]);
    assert!(
        !all.contains("escape.txt") && !all.contains(".hidden"),
        "{all}"
    );
}

/// The store is SIGKILLed in the middle of a download: the client is left with a
/// `.part` (never a file under its final name); once the store is back,
/// the same node serves the rest and the file verifies.
#[test]
fn a_store_that_dies_mid_download_costs_a_resume_not_a_wrong_file() {
    let Some(g) = Garage::start() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(32 << 20, 1408);
    g.put("pub/big.bin", &data);
    let srv = node(&g, tmp.path(), &[]);
    let slow = SlowProxy::start(srv.addr, 8 << 20);
    let child = ferry_spawn(tmp.path(), &["get", &slow.addr.to_string(), "big.bin"]);
    let part = tmp.path().join("big.bin.part");
    let reached = wait_until(PATIENCE, Duration::from_millis(10), || {
        part.exists() && file_len(&part) >= 4 << 20
    });
    g.kill();
    let run = finish(child, None, "ferry get while the store is killed".into());
    assert!(reached, "the download never reached 4 MiB\n{run}");
    assert!(
        !run.status.success(),
        "a download from a dead store succeeded?\n{run}"
    );
    assert!(
        !tmp.path().join("big.bin").exists(),
        "an incomplete file was saved"
    );
    let had = file_len(&part);
    g.restart();
    let run = ferry(tmp.path(), &["get", &srv.host(), "big.bin"]).ok();
    assert!(run.stderr.contains("resumed at"), "{run}");
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(fs::read(tmp.path().join("big.bin")).unwrap() == data);
    assert!(srv.stderr().lines().all(|l| !l.contains("panicked")));
    println!("FIGURE store SIGKILLed mid-download with {had} of {} bytes received; resumed from the same node once it was back, verified", data.len());
}

/// A store reached over `https://` behind a private CA (nginx with a
/// throwaway CA in front of Garage): trusted with `--s3-cacert`, refused at
/// startup without it; kept-alive connections to it serve a tree.
#[test]
fn an_https_store_behind_a_private_ca_is_trusted_only_with_its_ca() {
    let Some(g) = Garage::start() else { return };
    let Some(nginx) = tool("nginx") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = random_bytes(5 << 20, 1409);
    g.put("pub/f.bin", &data);
    for i in 0..20 {
        g.put(&format!("pub/t/{i}.txt"), format!("{i}\n").as_bytes());
    }
    let ca = crate::tls::Ca::new();
    let (cert, key) = ca.leaf(tmp.path(), "localhost", &["localhost"], false);
    let ca_pem = ca.write(tmp.path());
    let garage = g.var("AWS_ENDPOINT_URL");
    // The client signs the Host it connects to; nginx passes it on as is.
    let proxy = format!(
        "location / {{ proxy_pass {garage}; proxy_set_header Host $http_host; \
         proxy_buffering off; proxy_request_buffering off; client_max_body_size 0; }}"
    );
    let www = tmp.path().join("www");
    fs::create_dir_all(&www).unwrap();
    let front = crate::web::Nginx::start(&nginx, &www, &proxy, Some((&cert, &key)));
    let endpoint = format!("https://localhost:{}", front.port);
    let args = ["--s3-endpoint", endpoint.as_str()];
    // Without the CA (only the system's roots): refused at startup.
    let mut env = g.env_pairs();
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    let mut serve = vec![
        "serve",
        "s3://ferry/pub",
        "--port",
        "0",
        "--bind",
        "127.0.0.1",
    ];
    serve.extend(args);
    let run = ferry_env(tmp.path(), &serve, &env).fails();
    assert!(run.stderr.contains("cannot serve s3://ferry/pub"), "{run}");
    assert!(run.stderr.lines().count() == 1, "not one line: {run}");
    assert!(run.stderr.contains("certificate"), "{run}");
    println!("FIGURE https store without its CA: {}", run.stderr.trim());
    // With it: served, a file and a tree.
    let ca_arg = ca_pem.display().to_string();
    let mut extra = args.to_vec();
    extra.extend(["--s3-cacert", ca_arg.as_str()]);
    let srv = Server::start_url("s3://ferry/pub", tmp.path(), &extra, &env);
    let run = ferry(tmp.path(), &["get", &srv.host(), "f.bin"]).ok();
    assert!(run.stderr.contains("verified"), "{run}");
    assert!(fs::read(tmp.path().join("f.bin")).unwrap() == data);
    ferry(tmp.path(), &["get", "-r", &srv.host(), "t", "-q"]).ok();
    for i in 0..20 {
        let got = fs::read(tmp.path().join(format!("t/{i}.txt"))).unwrap();
        assert_eq!(got, format!("{i}\n").as_bytes());
    }
}
