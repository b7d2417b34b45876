//! Issue 11: tokens for every protocol, checked by a real curl, netcat's
//! role played by a raw socket, and ferry's own client; with and without
//! TLS.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "t0ken-for-the-tests-4f1c";

fn served() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "srv/a.txt", b"only with the token\n");
    dir
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn every_protocol_is_refused_without_the_token_and_served_with_it() {
    let dir = served();
    let d = dir.path();
    let server = Server::start_env(&d.join("srv"), &[], &[("FERRY_TOKEN", TOKEN)]);
    let host = server.host();
    let url = format!("http://{host}/a.txt");

    // Native: none, wrong, then right (flag and environment).
    let out = d.join("got");
    let r = ferry(d, &["get", &host, "a.txt", "-o", &s(&out)]).fails();
    assert!(r.stderr.contains("requires a token"), "{r}");
    let r = ferry(
        d,
        &["get", "--token", "not-it", &host, "a.txt", "-o", &s(&out)],
    )
    .fails();
    assert!(
        r.stderr.contains("wrong token") && !r.stderr.contains("not-it"),
        "{r}"
    );
    assert!(!out.exists());
    ferry(
        d,
        &["get", "--token", TOKEN, &host, "a.txt", "-o", &s(&out)],
    )
    .ok();
    assert_eq!(fs::read(&out).unwrap(), b"only with the token\n");
    let ls = ferry_env(d, &["ls", &host], &[("FERRY_TOKEN", TOKEN)]).ok();
    assert!(ls.stdout.contains("a.txt"), "{ls}");
    let say = ferry_env(d, &["say", &host, "hi"], &[("FERRY_TOKEN", TOKEN)]).ok();
    assert!(!say.stdout.is_empty(), "{say}");

    // HTTP: 401 with both challenges; Bearer and Basic (any user) served.
    let curl = tool("curl").expect("curl");
    let v = run_tool(d, &curl, &["-sS", "-i", &url]).ok();
    assert!(v.stdout.starts_with("HTTP/1.1 401"), "{v}");
    let lower = v.stdout.to_lowercase();
    assert!(
        lower.contains("www-authenticate: basic realm=\"ferry\""),
        "{v}"
    );
    assert!(
        lower.contains("www-authenticate: bearer realm=\"ferry\""),
        "{v}"
    );
    assert!(!v.stdout.contains("only with the token"), "{v}");
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let v = run_tool(d, &curl, &["-sSf", "-H", &bearer, &url]).ok();
    assert_eq!(v.stdout, "only with the token\n");
    let basic = format!("anyone:{TOKEN}");
    let v = run_tool(d, &curl, &["-sSf", "-u", &basic, &url]).ok();
    assert_eq!(v.stdout, "only with the token\n");
    let wrong = curl_writes(d, &curl, "%{http_code}", &["-u", "x:nope", &url]);
    assert_eq!(wrong, "401");
    // With the token, the listing's commands ask for it by name, never
    // showing it.
    let page = run_tool(
        d,
        &curl,
        &["-sSf", "-u", &basic, &format!("http://{host}/")],
    )
    .ok();
    assert!(
        page.stdout.contains("ferry get --token \"$FERRY_TOKEN\"")
            && page.stdout.contains("curl -u \":$FERRY_TOKEN\"")
            && !page.stdout.contains(TOKEN),
        "{page}"
    );
    // A directory listing is as closed as a file.
    let v = curl_writes(d, &curl, "%{http_code}", &[&format!("http://{host}/")]);
    assert_eq!(v, "401");

    // The tutorial's protocol cannot carry a token: one line, nothing else.
    let mut w = Wire::connect(server.addr, Duration::from_secs(10));
    w.send(b"a.txt\n");
    let (got, _) = w.read_to_close();
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("this server requires a token") && !got.contains("only with"),
        "{got}"
    );
    assert_eq!(got.lines().count(), 1, "{got}");

    // The token never reached the server's log (debug level here).
    assert!(!server.stderr().contains(TOKEN), "token logged");
}

#[test]
fn auth_prints_a_working_token_url_and_command_and_token_file_is_read() {
    let dir = served();
    let d = dir.path();
    let server = Server::start(&d.join("srv"), &["--auth"]);
    assert!(
        server.wait_stdout(Duration::from_secs(10), |l| l
            .trim_start()
            .starts_with("get:")),
        "{:?}",
        server.stdout_lines()
    );
    let lines = server.stdout_lines();
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| {
                l.trim_start()
                    .strip_prefix(name)
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} line in {lines:?}"))
    };
    let token = field("token:");
    assert_eq!(token.len(), 32, "128 bits in hex: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    // The URL carries the token as Basic credentials: curl follows it.
    let open = field("open:");
    let curl = tool("curl").expect("curl");
    let v = run_tool(d, &curl, &["-sSf", &format!("{open}a.txt")]).ok();
    assert_eq!(v.stdout, "only with the token\n");
    // The command, with FILE filled in, works as printed.
    let get = field("get:");
    let mut words: Vec<String> = get.split_whitespace().skip(1).map(str::to_string).collect();
    assert_eq!(words.last().map(String::as_str), Some("FILE"));
    words.pop();
    words.extend(["a.txt".into(), "-o".into(), s(&d.join("printed"))]);
    let args: Vec<&str> = words.iter().map(String::as_str).collect();
    ferry(d, &args).ok();
    assert_eq!(
        fs::read(d.join("printed")).unwrap(),
        b"only with the token\n"
    );

    // --token-file: the file's first line is the token.
    let file = d.join("token");
    fs::write(&file, format!("{TOKEN}\nignored\n")).unwrap();
    let server = Server::start(&d.join("srv"), &["--token-file", &s(&file)]);
    ferry(
        d,
        &[
            "get",
            "--token",
            TOKEN,
            &server.host(),
            "a.txt",
            "-o",
            &s(&d.join("f")),
        ],
    )
    .ok();
    ferry(
        d,
        &[
            "get",
            "--token",
            "ignored",
            &server.host(),
            "a.txt",
            "-o",
            &s(&d.join("g")),
        ],
    )
    .fails();
}

#[test]
fn tls_and_a_token_together() {
    let dir = served();
    let d = dir.path();
    let state = d.join("state");
    let server = Server::start_env(
        &d.join("srv"),
        &["--tls", "--token", TOKEN],
        &[("XDG_STATE_HOME", &s(&state))],
    );
    let config = d.join("config");
    let env = [("XDG_CONFIG_HOME", s(&config))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = ferry_env(
        d,
        &[
            "get",
            "--tls",
            &server.host(),
            "a.txt",
            "-o",
            &s(&d.join("x")),
        ],
        &env,
    )
    .fails();
    assert!(r.stderr.contains("requires a token"), "{r}");
    ferry_env(
        d,
        &[
            "get",
            "--tls",
            "--token",
            TOKEN,
            &server.host(),
            "a.txt",
            "-o",
            &s(&d.join("y")),
        ],
        &env,
    )
    .ok();
    assert_eq!(fs::read(d.join("y")).unwrap(), b"only with the token\n");
    let curl = tool("curl").expect("curl");
    let url = format!("https://127.0.0.1:{}/a.txt", server.addr.port());
    let v = curl_writes(d, &curl, "%{http_code}", &["-k", &url]);
    assert_eq!(v, "401");
    let v = run_tool(
        d,
        &curl,
        &[
            "-sSfk",
            "--http2",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &url,
        ],
    )
    .ok();
    assert_eq!(v.stdout, "only with the token\n");
}
