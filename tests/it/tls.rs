//! Issue 11: TLS on the same port. Certificates are made here with rcgen
//! (a CA, leaves signed by it, expired and wrong-name ones); the peers are
//! a real curl (HTTP/1.1 and HTTP/2), a real `openssl s_client`, netcat and
//! ferry's own client. Every client run gets its own `XDG_CONFIG_HOME`, so
//! trust on first use never touches the user's `known_hosts`.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

use crate::support::*;

/// A CA, and a way to sign leaves with it.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name = dn("ferry test CA");
        let cert = p.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Writes `NAME.pem` and `NAME.key` for a leaf valid for `names`
    /// (expired when `expired`), returning their paths.
    pub fn leaf(
        &self,
        dir: &Path,
        name: &str,
        names: &[&str],
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = names.iter().map(|n| san(n)).collect();
        p.distinguished_name = dn(name);
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        write_pair(dir, name, &cert.pem(), &key.serialize_pem())
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        fs::write(&path, self.cert.pem()).unwrap();
        path
    }
}

fn dn(common_name: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, common_name);
    dn
}

fn san(name: &str) -> SanType {
    match name.parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.to_string().try_into().unwrap()),
    }
}

/// A self-signed leaf for 127.0.0.1, as `ferry serve --tls` would make.
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![san("127.0.0.1"), san("localhost")];
    let cert = p.self_signed(&key).unwrap();
    write_pair(dir, name, &cert.pem(), &key.serialize_pem())
}

fn write_pair(dir: &Path, name: &str, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let c = dir.join(format!("{name}.pem"));
    let k = dir.join(format!("{name}.key"));
    fs::write(&c, cert).unwrap();
    fs::write(&k, key).unwrap();
    (c, k)
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The `sha256:...` fingerprint in the server's startup lines.
pub(crate) fn fingerprint_of(server: &Server) -> String {
    assert!(
        server.wait_stdout(std::time::Duration::from_secs(10), |l| l
            .contains("TLS sha256:")),
        "no fingerprint line: {:?}",
        server.stdout_lines()
    );
    let line = server
        .stdout_lines()
        .into_iter()
        .find(|l| l.contains("TLS sha256:"))
        .unwrap();
    let fp = line.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(fp.len(), "sha256:".len() + 64, "{line}");
    fp
}

/// A served directory with one small and one 3 MB file.
fn served() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let big = random_bytes(3 << 20, 11);
    write_file(dir.path(), "srv/big.bin", &big);
    write_file(dir.path(), "srv/a.txt", b"hello over tls\n");
    (dir, big)
}

/// `ferry ARGS` with its own, empty configuration directory.
fn ferry_in(cwd: &Path, config: &Path, args: &[&str]) -> Run {
    ferry_env(cwd, args, &[("XDG_CONFIG_HOME", &s(config))])
}

#[test]
fn curl_openssl_and_ferry_trust_a_ca_signed_certificate() {
    let (dir, big) = served();
    let d = dir.path();
    let ca = Ca::new();
    let ca_pem = ca.write(d);
    let (cert, key) = ca.leaf(d, "leaf", &["localhost", "127.0.0.1"], false);
    let server = Server::start(
        &d.join("srv"),
        &["--tls-cert", &s(&cert), "--tls-key", &s(&key)],
    );
    let port = server.addr.port();
    let url = format!("https://127.0.0.1:{port}/big.bin");

    let curl = tool("curl").expect("curl");
    let out = d.join("by-curl");
    run_tool(
        d,
        &curl,
        &["-sSf", "--cacert", &s(&ca_pem), "-o", &s(&out), &url],
    )
    .ok();
    assert_eq!(fs::read(&out).unwrap(), big);
    // -k: no verification at all, still encrypted and served.
    let v = curl_writes(d, &curl, "%{http_version} %{size_download}", &["-fk", &url]);
    assert!(v.ends_with(&format!(" {}", big.len())), "{v}");
    // HTTP/2 by ALPN.
    let v = run_tool(
        d,
        &curl,
        &[
            "-sSf",
            "--http2",
            "--cacert",
            &s(&ca_pem),
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &url,
        ],
    )
    .ok();
    assert_eq!(v.stdout, "2", "{v}");
    // Without the CA, curl refuses the certificate (exit 60).
    let v = run_tool(d, &curl, &["-sS", "-o", "/dev/null", &url]).fails();
    assert_eq!(v.status.code(), Some(60), "{v}");

    // openssl s_client: the handshake verifies against the CA, ALPN h2.
    let openssl = tool("openssl").expect("openssl");
    let v = run_tool(
        d,
        &openssl,
        &[
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            &s(&ca_pem),
            "-alpn",
            "h2",
            "-verify_return_error",
            "-brief",
        ],
    );
    let text = format!("{}{}", v.stdout, v.stderr);
    assert!(text.contains("Verification: OK"), "{v}");

    // ferry's client with --cacert: verified, nothing recorded for first use.
    let config = d.join("config");
    ferry_in(
        d,
        &config,
        &[
            "get",
            "--cacert",
            &s(&ca_pem),
            &server.host(),
            "big.bin",
            "-o",
            &s(&d.join("by-ferry")),
        ],
    )
    .ok();
    assert_eq!(fs::read(d.join("by-ferry")).unwrap(), big);
    assert!(!config.join("ferry/known_hosts").exists());
    let ls = ferry_in(d, &config, &["ls", "--cacert", &s(&ca_pem), &server.host()]).ok();
    assert!(
        ls.stdout.contains("a.txt") && ls.stdout.contains("big.bin"),
        "{ls}"
    );
}

#[test]
fn expired_and_wrong_name_certificates_are_refused() {
    let (dir, _) = served();
    let d = dir.path();
    let ca = Ca::new();
    let ca_pem = ca.write(d);
    let config = d.join("config");
    let curl = tool("curl").expect("curl");
    for (name, names, expired, why) in [
        ("expired", &["127.0.0.1"][..], true, "expired"),
        (
            "elsewhere",
            &["other.example"][..],
            false,
            "not valid for name",
        ),
    ] {
        let (cert, key) = ca.leaf(d, name, names, expired);
        let server = Server::start(
            &d.join("srv"),
            &["--tls-cert", &s(&cert), "--tls-key", &s(&key)],
        );
        let out = d.join(format!("got-{name}"));
        let r = ferry_in(
            d,
            &config,
            &[
                "get",
                "--cacert",
                &s(&ca_pem),
                &server.host(),
                "a.txt",
                "-o",
                &s(&out),
            ],
        )
        .fails();
        assert!(r.stderr.to_lowercase().contains(why), "{name}: {r}");
        assert!(
            !out.exists(),
            "{name}: saved a file from an untrusted server"
        );
        let url = format!("https://127.0.0.1:{}/a.txt", server.addr.port());
        let v = run_tool(
            d,
            &curl,
            &["-sS", "--cacert", &s(&ca_pem), "-o", "/dev/null", &url],
        )
        .fails();
        assert_eq!(v.status.code(), Some(60), "{name}: {v}");
    }
}

#[test]
fn first_use_is_recorded_and_a_changed_certificate_refused() {
    let (dir, big) = served();
    let d = dir.path();
    let config = d.join("config");
    let (cert_a, key_a) = self_signed(d, "a");
    let mut first = Server::start(
        &d.join("srv"),
        &["--tls-cert", &s(&cert_a), "--tls-key", &s(&key_a)],
    );
    let fp_a = fingerprint_of(&first);
    let port = first.addr.port().to_string();
    let host = first.host();

    let r = ferry_in(
        d,
        &config,
        &["get", "--tls", &host, "big.bin", "-o", &s(&d.join("one"))],
    )
    .ok();
    assert!(
        r.stderr.contains("first connection") && r.stderr.contains(&fp_a),
        "{r}"
    );
    assert_eq!(fs::read(d.join("one")).unwrap(), big);
    let known = fs::read_to_string(config.join("ferry/known_hosts")).unwrap();
    assert_eq!(known, format!("{host} {fp_a}\n"));
    // Again: trusted silently, nothing appended.
    let r = ferry_in(
        d,
        &config,
        &["get", "--tls", &host, "a.txt", "-o", &s(&d.join("two"))],
    )
    .ok();
    assert!(!r.stderr.contains("first connection"), "{r}");
    assert_eq!(
        fs::read_to_string(config.join("ferry/known_hosts")).unwrap(),
        known
    );
    // `ferrys://` is `--tls` in the address.
    let r = ferry_in(
        d,
        &config,
        &[
            "get",
            &format!("ferrys://{host}/a.txt"),
            "-o",
            &s(&d.join("via-url")),
        ],
    )
    .ok();
    assert!(!r.stderr.contains("first connection"), "{r}");
    assert_eq!(
        fs::read(d.join("via-url")).unwrap(),
        fs::read(d.join("two")).unwrap()
    );
    // The right pin works without known_hosts.
    ferry_in(
        d,
        &d.join("other"),
        &[
            "get",
            "--pin",
            &fp_a,
            &host,
            "a.txt",
            "-o",
            &s(&d.join("p")),
        ],
    )
    .ok();

    // Same address, another certificate: refused, both fingerprints and
    // the line to edit shown, nothing saved, known_hosts unchanged.
    first.kill();
    let (cert_b, key_b) = self_signed(d, "b");
    let second = Server::start(
        &d.join("srv"),
        &[
            "--port",
            &port,
            "--tls-cert",
            &s(&cert_b),
            "--tls-key",
            &s(&key_b),
        ],
    );
    assert_eq!(second.host(), host);
    let fp_b = fingerprint_of(&second);
    assert_ne!(fp_a, fp_b);
    let out = d.join("three");
    let r = ferry_in(
        d,
        &config,
        &["get", "--tls", &host, "a.txt", "-o", &s(&out)],
    )
    .fails();
    assert!(
        r.stderr.contains("CHANGED")
            && r.stderr.contains(&fp_a)
            && r.stderr.contains(&fp_b)
            && r.stderr.contains("line 1 of"),
        "{r}"
    );
    assert!(!out.exists());
    assert_eq!(
        fs::read_to_string(config.join("ferry/known_hosts")).unwrap(),
        known
    );
    // A wrong pin is refused too, naming both.
    let r = ferry_in(
        d,
        &config,
        &["get", "--pin", &fp_a, &host, "a.txt", "-o", &s(&out)],
    )
    .fails();
    assert!(
        r.stderr.contains("not the pinned") && r.stderr.contains(&fp_b),
        "{r}"
    );
    assert!(!out.exists());
}

#[test]
fn plaintext_is_refused_in_its_own_protocol_unless_allowed() {
    let (dir, _) = served();
    let d = dir.path();
    let (cert, key) = self_signed(d, "c");
    let tls = ["--tls-cert", &s(&cert), "--tls-key", &s(&key)];
    let server = Server::start(&d.join("srv"), &tls);
    let port = server.addr.port();

    // Native: an error frame saying so.
    let out = d.join("plain");
    let r = ferry(d, &["get", &server.host(), "a.txt", "-o", &s(&out)]).fails();
    assert!(r.stderr.contains("requires TLS"), "{r}");
    assert!(!out.exists());
    // HTTP: a redirect to the same URL over https.
    let curl = tool("curl").expect("curl");
    let v = curl_writes(
        d,
        &curl,
        "%{http_code} %{redirect_url}",
        &[&format!("http://127.0.0.1:{port}/a.txt?x=1")],
    );
    assert_eq!(v, format!("308 https://127.0.0.1:{port}/a.txt?x=1"));
    // The tutorial's protocol: one line, then close.
    let mut w = Wire::connect(server.addr, std::time::Duration::from_secs(10));
    w.send(b"a.txt\n");
    let (got, _) = w.read_to_close();
    assert_eq!(
        String::from_utf8_lossy(&got),
        "this server requires TLS (ferry get --tls); plaintext refused\n"
    );

    // --allow-plaintext: both served on the one port.
    let mut both = tls.to_vec();
    both.push("--allow-plaintext");
    let server = Server::start(&d.join("srv"), &both);
    ferry(
        d,
        &["get", &server.host(), "a.txt", "-o", &s(&d.join("p1"))],
    )
    .ok();
    ferry_in(
        d,
        &d.join("cfg"),
        &[
            "get",
            "--tls",
            &server.host(),
            "a.txt",
            "-o",
            &s(&d.join("p2")),
        ],
    )
    .ok();
    assert_eq!(fs::read(d.join("p1")).unwrap(), b"hello over tls\n");
    assert_eq!(fs::read(d.join("p2")).unwrap(), b"hello over tls\n");
}

#[test]
fn a_generated_certificate_is_kept_private_and_reused() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _) = served();
    let d = dir.path();
    let state = d.join("state");
    let env = [("XDG_STATE_HOME", s(&state))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut one = Server::start_env(&d.join("srv"), &["--tls"], &env);
    let fp = fingerprint_of(&one);
    // The lines arrive one by one: wait for the URL's, bounded.
    assert!(
        one.wait_stdout(std::time::Duration::from_secs(10), |l| l
            .contains("https://")),
        "{:?}",
        one.stdout_lines()
    );
    for f in ["cert.pem", "key.pem"] {
        let mode = fs::metadata(state.join("ferry").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    let dmode = fs::metadata(state.join("ferry"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700);
    // The client pins what the server printed.
    ferry(
        d,
        &[
            "get",
            "--pin",
            &fp,
            &one.host(),
            "a.txt",
            "-o",
            &s(&d.join("x")),
        ],
    )
    .ok();
    one.kill();
    let two = Server::start_env(&d.join("srv"), &["--tls"], &env);
    assert_eq!(
        fingerprint_of(&two),
        fp,
        "a restart must keep the certificate"
    );
}
