//! Issue 10: the listing page in a real headless browser (Debian's
//! `chromium`): it shows its entries, a hostile name renders as text, its
//! links download the right bytes, and its own script and style pass its
//! Content-Security-Policy; and, driven through the DevTools protocol,
//! its upload control saves files (issue 12).

use std::fs;

use serde_json::json;

use crate::cdp::{chromium_args, Chrome};
use crate::http::hrefs;
use crate::support::*;

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

/// The page's upload control, as a user drives it: files picked in the
/// file input (`DOM.setFileInputFiles`, what a file dialog does) are
/// posted with progress, saved byte-identical, and listed after the
/// page's reload; a name that exists is refused on the page, and the old
/// file stays.
#[test]
fn browser_uploads_picked_files_through_the_listing_page() {
    let Some(chromium) = tool("chromium") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "share/existing.txt", b"the original\n");
    let srv = Server::start(root.path(), &["--upload"]);
    let work = tempfile::tempdir().unwrap();
    let picked = [
        ("photo.jpg", random_bytes(3 * 1024 * 1024 + 17, 12)),
        ("notes & <i>ideas.txt", b"an idea\n".to_vec()),
        ("文件.txt", random_bytes(1000, 13)),
    ];
    let local = work.path().join("local");
    fs::create_dir(&local).unwrap();
    for (n, data) in &picked {
        fs::write(local.join(n), data).unwrap();
    }
    let mut chrome = Chrome::open(
        &chromium,
        &format!("http://{}/share/", srv.host()),
        work.path(),
    );
    let ready =
        "document.readyState === 'complete' && document.getElementById('upload') ? 'ready' : ''";
    chrome.wait_for(ready, 60);
    let pick = |chrome: &mut Chrome, files: Vec<String>| {
        let doc = chrome.call("DOM.getDocument", json!({}));
        let input = chrome.call(
            "DOM.querySelector",
            json!({"nodeId": doc["root"]["nodeId"], "selector": "#upload input[type=file]"}),
        );
        chrome.call(
            "DOM.setFileInputFiles",
            json!({"nodeId": input["nodeId"], "files": files}),
        );
    };
    // The outcome, once the script has it: state, message, progress.
    let outcome = "(() => { const u = document.getElementById('upload'); \
        const s = u && u.dataset.state; if (s !== 'done' && s !== 'failed') return ''; \
        const b = u.querySelector('progress'); \
        return s + '|' + u.querySelector('output').textContent + '|' + b.value + '/' + b.max; })()";
    let files: Vec<String> = picked
        .iter()
        .map(|(n, _)| local.join(n).display().to_string())
        .collect();
    pick(&mut chrome, files);
    let said = chrome.wait_for(outcome, 60);
    let parts: Vec<&str> = said.split('|').collect();
    assert_eq!(parts[..2], ["done", "3 of 3 file(s) uploaded"], "{said}");
    // The progress bar ended full.
    let (done, max) = parts[2].split_once('/').unwrap();
    assert!(done == max && max.parse::<f64>().unwrap() > 3e6, "{said}");
    for (n, data) in &picked {
        let saved = fs::read(root.path().join("share").join(n))
            .unwrap_or_else(|e| panic!("{n} not saved: {e}"));
        assert!(saved == *data, "{n}: the saved bytes differ");
    }
    // The page reloads and lists them.
    let listed =
        "(() => { const n = [...document.querySelectorAll('tbody tr')].map(r => r.dataset.name); \
        return n.includes('photo.jpg') && n.includes('文件.txt') ? n.join('\\n') : ''; })()";
    let names = chrome.wait_for(listed, 30);
    assert!(names.contains("notes & <i>ideas.txt"), "{names}");

    // A name that exists: refused on the page, the original kept.
    fs::write(local.join("existing.txt"), b"a replacement\n").unwrap();
    chrome.wait_for(ready, 30);
    pick(
        &mut chrome,
        vec![local.join("existing.txt").display().to_string()],
    );
    let said = chrome.wait_for(outcome, 60);
    assert!(
        said.starts_with("failed|0 of 1 file(s) uploaded; existing.txt: already exists"),
        "{said}"
    );
    assert_eq!(
        fs::read(root.path().join("share/existing.txt")).unwrap(),
        b"the original\n"
    );
    // No temporary left behind, and the page kept its own policy.
    let left: Vec<_> = fs::read_dir(root.path().join("share"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for line in chrome.log_text().lines() {
        assert!(
            !line.contains("Content Security Policy") && !line.contains("Refused to"),
            "the page broke its own policy: {line}"
        );
    }
    eprintln!(
        "FIGURE browser upload: 3 files ({} bytes) picked in chromium, posted with progress, saved byte-identical; an existing name refused on the page",
        picked.iter().map(|(_, d)| d.len()).sum::<usize>()
    );
}
