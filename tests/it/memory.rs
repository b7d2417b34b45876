//! Issue 13: the client's memory is bounded by design, whatever the file
//! size: peak resident memory of `ferry get` (measured by GNU time, `-v`)
//! stays under 64 MiB for a 1 GiB file, saved whole, split over 8
//! connections, written to stdout, and fetched over HTTP. (Mapping the
//! whole output file for hashing, as before, cost about 1 GiB.)

use std::fs;
use std::process::{Command, Stdio};

use crate::support::*;

/// The bound the issue sets.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// Runs `ferry ARGS` under `/usr/bin/time -v`; its peak RSS in KiB.
fn peak_rss(time: &std::path::Path, cwd: &std::path::Path, args: &[&str]) -> u64 {
    let out = Command::new(time)
        .arg("-v")
        .arg(ferry_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferry {args:?} failed:\n{err}");
    err.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in:\n{err}"))
}

#[test]
fn get_of_a_gigabyte_stays_under_64_mib_of_memory() {
    let Some(time) = tool("time") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    fs::create_dir_all(&root).unwrap();
    // Sparse: a gigabyte that costs the server no disk and no reads.
    let f = fs::File::create(root.join("gig.bin")).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let srv = Server::start(&root, &[]);
    let host = srv.host();
    let mut figures = Vec::new();
    for (what, extra) in [("whole", &[][..]), ("-j 8", &["-j", "8"][..])] {
        let out = tmp.path().join(format!("out-{}", figures.len()));
        fs::create_dir_all(&out).unwrap();
        let mut args = vec!["get", &host, "gig.bin", "-q", "-o"];
        let o = out.to_str().unwrap().to_string() + "/";
        args.push(&o);
        args.extend(extra);
        let kib = peak_rss(&time, tmp.path(), &args);
        assert_eq!(fs::metadata(out.join("gig.bin")).unwrap().len(), 1 << 30);
        fs::remove_file(out.join("gig.bin")).unwrap();
        figures.push((what, kib));
    }
    let kib = peak_rss(
        &time,
        tmp.path(),
        &["get", &host, "gig.bin", "-q", "-o", "-"],
    );
    figures.push(("to stdout", kib));
    // Over HTTP from the same server (its HTTP front-end), saved.
    let url = format!("http://{host}/gig.bin");
    let out = tmp.path().join("out-http");
    fs::create_dir_all(&out).unwrap();
    let o = out.to_str().unwrap().to_string() + "/";
    let kib = peak_rss(&time, tmp.path(), &["get", &url, "-q", "-o", &o]);
    assert_eq!(fs::metadata(out.join("gig.bin")).unwrap().len(), 1 << 30);
    figures.push(("http", kib));
    fs::remove_file(out.join("gig.bin")).unwrap();
    let kib = peak_rss(&time, tmp.path(), &["get", &url, "-q", "-j", "8", "-o", &o]);
    assert_eq!(fs::metadata(out.join("gig.bin")).unwrap().len(), 1 << 30);
    figures.push(("http -j 8", kib));
    eprintln!("FIGURE client memory, 1 GiB get: peak RSS {figures:?} KiB");
    for (what, kib) in figures {
        assert!(kib <= MAX_RSS_KIB, "{what}: peak RSS {kib} KiB");
    }
}
