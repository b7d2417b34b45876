//! Issue 10: the listing page in a real headless browser (Debian's
//! `chromium`): it shows its entries, a hostile name renders as text, its
//! links download the right bytes, and its own script and style pass its
//! Content-Security-Policy.

use std::fs;
use std::path::Path;

use crate::http::hrefs;
use crate::support::*;

/// Chromium's flags for a headless run on this machine: no sandbox (tests
/// run as root), no GPU, and none of the background traffic a closed
/// network refuses.
fn chromium_args(profile: &Path) -> Vec<String> {
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

#[test]
fn browser_shows_the_listing_renders_hostile_names_as_text_and_its_links_download() {
    let (Some(chromium), Some(curl)) = (tool("chromium"), tool("curl")) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let names = [
        "notes.txt",
        "with space & amp.txt",
        "<img src=x onerror=alert(1)>.txt",
        "文件.txt",
        "100%.txt",
    ];
    for (i, n) in names.iter().enumerate() {
        write_file(
            root.path(),
            &format!("share/{n}"),
            format!("content {i}\n").as_bytes(),
        );
    }
    write_file(root.path(), "share/sub/inner.bin", b"inner");
    let srv = Server::start(root.path(), &[]);
    let work = tempfile::tempdir().unwrap();
    let url = format!("http://{}/share/", srv.host());

    let mut args = chromium_args(&work.path().join("profile"));
    args.extend(["--dump-dom".to_string(), url.clone()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_tool(work.path(), &chromium, &argv).ok();
    let dom = &run.stdout;
    let body = dom.split("<tbody>").nth(1).unwrap_or_default();
    assert!(body.contains("notes.txt"), "{dom}");
    assert!(body.contains("sub/"), "{dom}");
    // The hostile name is text in a cell, not an element.
    assert!(
        body.contains("&lt;img src=x onerror=alert(1)&gt;.txt"),
        "{dom}"
    );
    assert!(!dom.contains("<img"), "a name became an element:\n{dom}");
    assert!(body.contains("文件.txt"));
    // Its style and script are allowed by its policy; nothing else ran.
    for line in run.stderr.lines() {
        assert!(
            !line.contains("Content Security Policy") && !line.contains("Refused to"),
            "the page broke its own policy: {line}"
        );
    }
    // Each link, as the browser rendered it, downloads its own file.
    let links = hrefs(dom);
    for (i, n) in names.iter().enumerate() {
        let want = format!("content {i}\n");
        let got = links
            .iter()
            .filter(|l| !l.ends_with('/'))
            .map(|l| {
                let r = run_tool(
                    work.path(),
                    &curl,
                    &["-sS", &format!("http://{}{l}", srv.host())],
                );
                (l.clone(), r.stdout)
            })
            .find(|(_, body)| *body == want);
        assert!(got.is_some(), "no link in {links:?} downloads {n:?}");
    }

    // A screenshot renders (what docs/listing.png was made with).
    let shot = work.path().join("listing.png");
    let mut args = chromium_args(&work.path().join("profile2"));
    args.extend([
        "--window-size=1000,640".to_string(),
        format!("--screenshot={}", shot.display()),
        url,
    ]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_tool(work.path(), &chromium, &argv).ok();
    let png = fs::read(&shot).unwrap_or_else(|_| panic!("no screenshot\n{run}"));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
    eprintln!(
        "FIGURE browser: listing of {} entries rendered by chromium, hostile name as text, {} links fetched, screenshot {} bytes",
        names.len() + 1,
        names.len(),
        png.len()
    );
}
