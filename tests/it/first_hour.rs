//! Issue 15: the first hour with ferry, as a newcomer meets it. Each test
//! drives the built binary against a real server on loopback.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use ferry::protocol::{EntryKind, FileHeader, Frame, ListEntry, StatReply};

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

fn paths(v: &[&str]) -> Vec<PathBuf> {
    v.iter().map(PathBuf::from).collect()
}

fn raw_fetch(srv: &Server, name: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all(format!("{name}\n").as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn issue15_hidden_files_are_neither_listed_nor_served_unless_asked() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "visible.txt", b"visible");
    write_file(root.path(), ".env", b"SECRET=1");
    write_file(root.path(), ".git/config", b"[core]");
    write_file(root.path(), "sub/.ssh/id", b"key");
    write_file(root.path(), "sub/ok.txt", b"ok");
    for (link, to) in [
        ("link_env", ".env"),
        ("link_git", ".git/config"),
        ("link_ok", "visible.txt"),
    ] {
        std::os::unix::fs::symlink(to, root.path().join(link)).unwrap();
    }
    let srv = Server::start(root.path(), &[]);
    assert!(
        srv.startup.contains("hidden files excluded"),
        "{}",
        srv.startup
    );
    let out = tempfile::tempdir().unwrap();
    let ls = ferry(out.path(), &["ls", &srv.host()]).ok();
    for shown in ["visible.txt", "sub/", "link_ok"] {
        assert!(ls.stdout.contains(shown), "{shown} missing\n{ls}");
    }
    for hidden in [".env", ".git", "link_env", "link_git"] {
        assert!(!ls.stdout.contains(hidden), "{hidden} listed\n{ls}");
    }
    let ls = ferry(out.path(), &["ls", &srv.host(), "sub"]).ok();
    assert!(!ls.stdout.contains(".ssh"), "{ls}");
    for name in [".env", ".git/config", "link_env", "link_git", "sub/.ssh/id"] {
        let run = ferry(out.path(), &["get", &srv.host(), name, "-o", "dl/"]).fails();
        assert!(run.stderr.contains("no such file"), "{name}\n{run}");
        assert!(
            raw_fetch(&srv, name).is_empty(),
            "raw protocol served {name}"
        );
    }
    ferry(out.path(), &["get", "-r", &srv.host(), ".", "-o", "all"]).ok();
    assert_eq!(
        files_under(&out.path().join("all")),
        paths(&["link_ok", "sub/ok.txt", "visible.txt"])
    );
    drop(srv);

    let srv = Server::start(root.path(), &["--hidden"]);
    assert!(
        srv.startup.contains("hidden files included"),
        "{}",
        srv.startup
    );
    ferry(out.path(), &["get", &srv.host(), ".env", "-o", "shown/"]).ok();
    assert_eq!(
        fs::read(out.path().join("shown/.env")).unwrap(),
        b"SECRET=1"
    );
    let ls = ferry(out.path(), &["ls", &srv.host()]).ok();
    assert!(ls.stdout.contains(".git/"), "{ls}");
}

#[test]
fn issue15_a_message_server_shares_no_files_and_says_so() {
    let cwd = tempfile::tempdir().unwrap();
    write_file(cwd.path(), "secret.txt", b"not for you");
    let srv = Server::start_in(cwd.path(), &["--tutorial", "message"], Some("info"));
    assert!(
        srv.startup
            .contains("message server (no files shared) on 127.0.0.1:")
            && srv.startup.contains("(this machine only)"),
        "{}",
        srv.startup
    );
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", &srv.host(), "secret.txt"]).fails();
    assert!(run.stderr.contains("shares no files"), "{run}");
    assert!(files_under(out.path()).is_empty(), "{run}");
    let run = ferry(out.path(), &["ls", &srv.host()]).fails();
    assert!(run.stderr.contains("shares no files"), "{run}");
    let say = ferry(out.path(), &["say", &srv.host(), "hi"]).ok();
    assert_eq!(say.stdout.trim(), "已收到你的信息", "{say}");
    // The tutorial's client gets its acknowledgement too.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    s.write_all("hello".as_bytes()).unwrap();
    let mut ack = [0u8; 64];
    let n = s.read(&mut ack).unwrap();
    assert_eq!(std::str::from_utf8(&ack[..n]).unwrap(), "已收到你的信息");
}

#[test]
fn issue15_an_interrupted_split_download_resumes_its_ranges() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(48 * MIB, 15);
    write_file(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let slow = SlowProxy::start(srv.addr, 3 * MIB as u64);
    let mut figures = Vec::new();
    for (sig, label) in [("INT", "Ctrl-C"), ("KILL", "kill -9")] {
        let out = tempfile::tempdir().unwrap();
        let meta = out.path().join("dl/big.bin.part.meta");
        let child = ferry_spawn(
            out.path(),
            &["get", "-j", "4", &slow.host(), "big.bin", "-o", "dl/"],
        );
        let pid = child.id();
        // Checkpointed progress of at least 4 MiB, then the interruption.
        let progressed = wait_until(PATIENCE, Duration::from_millis(20), || {
            recorded_progress(&meta).is_some_and(|n| n >= 4 * MIB as u64)
        });
        signal(pid, sig);
        let run = finish(child, None, format!("ferry get -j 4 (then SIG{sig})"));
        assert!(progressed, "no range progress recorded\n{run}");
        if sig == "INT" {
            assert_eq!(run.status.code(), Some(130), "{run}");
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{run}");
            assert!(
                lines[0].starts_with("ferry: interrupted: kept ")
                    && lines[0].contains("of 48.0 MiB in dl/big.bin.part")
                    && lines[0].ends_with("run the same command again to resume"),
                "{run}"
            );
        }
        let kept = recorded_progress(&meta).expect("progress kept in the meta");
        assert!(kept >= 4 * MIB as u64, "{kept}\n{run}");
        let again = ferry(
            out.path(),
            &["get", "-j", "4", &srv.host(), "big.bin", "-o", "dl/"],
        )
        .ok();
        assert!(
            again.stderr.contains("of it resumed from the .part"),
            "{again}"
        );
        assert!(
            fs::read(out.path().join("dl/big.bin")).unwrap() == data,
            "{again}"
        );
        assert!(!meta.exists());
        figures.push(format!("{label}: {kept} bytes kept and resumed"));
    }
    eprintln!(
        "FIGURE split download of 48 MiB over -j 4: {}",
        figures.join("; ")
    );
}

#[test]
fn issue15_ctrl_c_says_what_was_kept_and_the_rerun_resumes() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(24 * MIB, 16);
    write_file(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let slow = SlowProxy::start(srv.addr, 2 * MIB as u64);
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("dl/big.bin.part");
    let child = ferry_spawn(out.path(), &["get", &slow.host(), "big.bin", "-o", "dl/"]);
    let pid = child.id();
    let started = wait_until(PATIENCE, Duration::from_millis(10), || {
        file_len(&part) >= MIB as u64
    });
    signal(pid, "INT");
    let run = finish(child, None, "ferry get (then SIGINT)".into());
    assert!(started, "{run}");
    assert_eq!(run.status.code(), Some(130), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
    assert!(
        run.stderr.starts_with("ferry: interrupted: kept ")
            && run
                .stderr
                .contains("in dl/big.bin.part; run the same command again to resume"),
        "{run}"
    );
    let kept = file_len(&part);
    let again = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).ok();
    assert!(
        again.stderr.contains(&format!("resumed at {kept}")),
        "{again}"
    );
    assert!(fs::read(out.path().join("dl/big.bin")).unwrap() == data);

    // To standard output nothing can be kept: it says so.
    let child = ferry_spawn(out.path(), &["get", &slow.host(), "big.bin", "-o", "-"]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(700));
    signal(pid, "INT");
    let run = finish(child, None, "ferry get -o - (then SIGINT)".into());
    assert_eq!(run.status.code(), Some(130), "{run}");
    assert!(run.stderr.contains("-o - cannot resume"), "{run}");
}

#[test]
fn issue15_ctrl_c_stops_a_fast_download_at_once() {
    // Straight from the server (no slow proxy), from the page cache: the
    // socket never runs dry, so the receive must yield to notice Ctrl-C.
    let root = tempfile::tempdir().unwrap();
    let size = 4u64 << 30;
    fs::File::create(root.path().join("huge.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("dl/huge.bin.part");
    let child = ferry_spawn(out.path(), &["get", &srv.host(), "huge.bin", "-o", "dl/"]);
    let pid = child.id();
    let started = wait_until(PATIENCE, Duration::from_millis(5), || {
        file_len(&part) >= 32 * MIB as u64
    });
    signal(pid, "INT");
    let run = finish(child, None, "ferry get huge.bin (then SIGINT)".into());
    assert!(started, "{run}");
    assert_eq!(run.status.code(), Some(130), "{run}");
    let kept = file_len(&part);
    assert!(kept < size, "the whole file arrived after Ctrl-C\n{run}");
    eprintln!("FIGURE Ctrl-C of a 4 GiB download at >= 32 MiB: {kept} bytes kept");
}

/// Serves `a.bin` whole, then cuts `b.bin` mid-body, then is gone.
fn dying_server() -> FakeServer {
    let body = vec![7u8; 1000];
    FakeServer::start(1, move |frame, s| {
        let Frame::Get(g) = frame else {
            return Ok(Flow::Close);
        };
        let mut out = Vec::new();
        Frame::FileHeader(FileHeader {
            offset: 0,
            length: 1000,
            size: 1000,
            mtime_ns: 0,
        })
        .encode(&mut out);
        if g.path == b"a.bin" {
            out.extend_from_slice(&body);
            Frame::Trailer {
                hash: *blake3::hash(&body).as_bytes(),
            }
            .encode(&mut out);
            s.write_all(&out)?;
            Ok(Flow::Continue)
        } else {
            out.extend_from_slice(&body[..300]);
            s.write_all(&out)?;
            Ok(Flow::Close)
        }
    })
}

#[test]
fn issue15_stdout_downloads_say_once_they_cannot_resume_and_stop_when_the_server_is_gone() {
    let srv = dying_server();
    let out = tempfile::tempdir().unwrap();
    let run = ferry(
        out.path(),
        &["get", &srv.host(), "a.bin", "b.bin", "c.bin", "-o", "-"],
    )
    .fails();
    srv.join();
    assert_eq!(run.stderr.matches("cannot resume").count(), 1, "{run}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 3, "lost, cannot resume, refused\n{run}");
    assert!(lines[0].contains("connection lost"), "{run}");
    assert!(lines[2].contains("connection refused"), "{run}");
    assert!(run.stdout.len() >= 1000, "a.bin was written");
}

/// Writes a `.part` and its metadata for `target` by hand, as an earlier
/// run would have left them, for the server's file at `served`.
fn leave_part(target: &Path, bytes: &[u8], served: &Path, mtime_shift_ns: i64) {
    let m = fs::metadata(served).unwrap();
    let mtime_ns = m
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
        + mtime_shift_ns;
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    let mut part = target.as_os_str().to_owned();
    part.push(".part");
    fs::write(&part, bytes).unwrap();
    part.push(".meta");
    fs::write(
        &part,
        format!("ferry-part 2\nsize={}\nmtime_ns={mtime_ns}\n", m.len()),
    )
    .unwrap();
}

#[test]
fn issue15_a_part_that_cannot_be_used_is_said_to_be_started_over() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(2 * MIB, 17);
    write_file(root.path(), "f.bin", &data);
    let served = root.path().join("f.bin");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("dl/f.bin");

    // Damaged bytes, for the server's current version.
    leave_part(&target, &vec![0u8; MIB], &served, 0);
    let run = ferry(out.path(), &["get", &srv.host(), "f.bin", "-o", "dl/"]).ok();
    assert!(
        run.stderr
            .contains("the earlier .part did not match the server's file, so it started over"),
        "{run}"
    );
    assert!(fs::read(&target).unwrap() == data);
    fs::remove_file(&target).unwrap();

    // A part of another version of the file.
    leave_part(&target, &data[..MIB], &served, -1_000_000_000);
    let run = ferry(out.path(), &["get", &srv.host(), "f.bin", "-o", "dl/"]).ok();
    assert!(
        run.stderr
            .contains("the server's file had changed since the .part was saved"),
        "{run}"
    );
    assert!(fs::read(&target).unwrap() == data);
}

#[test]
fn issue15_output_works_like_cp_and_never_overwrites_silently() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "a.txt", b"server a");
    write_file(root.path(), "b.txt", b"server b");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let h = srv.host();

    ferry(out.path(), &["get", &h, "a.txt", "-o", "x/y/renamed.txt"]).ok();
    assert_eq!(
        fs::read(out.path().join("x/y/renamed.txt")).unwrap(),
        b"server a"
    );
    fs::create_dir(out.path().join("existing")).unwrap();
    ferry(out.path(), &["get", &h, "a.txt", "-o", "existing"]).ok();
    assert_eq!(
        fs::read(out.path().join("existing/a.txt")).unwrap(),
        b"server a"
    );
    ferry(out.path(), &["get", &h, "a.txt", "-o", "newdir/"]).ok();
    assert_eq!(
        fs::read(out.path().join("newdir/a.txt")).unwrap(),
        b"server a"
    );
    ferry(out.path(), &["get", &h, "a.txt", "b.txt", "-o", "several"]).ok();
    assert_eq!(
        files_under(&out.path().join("several")),
        paths(&["a.txt", "b.txt"])
    );
    // The saved file carries the server's modification time.
    assert_eq!(
        fs::metadata(out.path().join("newdir/a.txt"))
            .unwrap()
            .modified()
            .unwrap(),
        fs::metadata(root.path().join("a.txt"))
            .unwrap()
            .modified()
            .unwrap()
    );

    // Re-run: ferry's own copy is recognised, nothing is fetched.
    let again = ferry(out.path(), &["get", &h, "a.txt", "-o", "newdir/"]).ok();
    assert!(again.stderr.contains("is already here"), "{again}");
    // Someone else's file under that name: refused, untouched...
    fs::write(out.path().join("mine.txt"), b"my own").unwrap();
    let run = ferry(out.path(), &["get", &h, "a.txt", "-o", "mine.txt"]).fails();
    assert!(
        run.stderr.trim()
            == "ferry: mine.txt already exists and differs from the server's file (use --force to replace it)",
        "{run}"
    );
    assert_eq!(fs::read(out.path().join("mine.txt")).unwrap(), b"my own");
    // ...unless --force.
    ferry(
        out.path(),
        &["get", &h, "a.txt", "-o", "mine.txt", "--force"],
    )
    .ok();
    assert_eq!(fs::read(out.path().join("mine.txt")).unwrap(), b"server a");
}

#[test]
fn issue15_whole_trees_and_addresses_as_people_type_them() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "top.txt", b"top");
    write_file(root.path(), "sub/with space.txt", b"spaced");
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    for (whole, dir) in [(".", "dot"), ("/", "slash")] {
        let run = ferry(out.path(), &["get", "-r", &srv.host(), whole, "-o", dir]).ok();
        assert_eq!(
            files_under(&out.path().join(dir)),
            paths(&["sub/with space.txt", "top.txt"]),
            "{run}"
        );
        assert!(run.stderr.contains("(2 files, "), "{run}");
    }
    let one = format!("{}/sub/with space.txt", srv.host());
    ferry(out.path(), &["get", &one, "-o", "short/"]).ok();
    assert_eq!(
        fs::read(out.path().join("short/with space.txt")).unwrap(),
        b"spaced"
    );
    let url = format!("ferry://{}/sub/with%20space.txt", srv.host());
    ferry(out.path(), &["get", &url, "-o", "url/"]).ok();
    assert_eq!(
        fs::read(out.path().join("url/with space.txt")).unwrap(),
        b"spaced"
    );
    let ls = ferry(out.path(), &["ls", &format!("{}/sub", srv.host())]).ok();
    assert!(ls.stdout.contains("with space.txt"), "{ls}");
    drop(srv);

    // --bind takes a name.
    let srv = Server::start_on(root.path(), "localhost", &[]);
    assert!(srv.addr.ip().is_loopback(), "{}", srv.startup);
    let run = ferry(
        out.path(),
        &[
            "get",
            &format!("localhost:{}", srv.addr.port()),
            "top.txt",
            "-o",
            "named/",
        ],
    )
    .ok();
    assert_eq!(
        fs::read(out.path().join("named/top.txt")).unwrap(),
        b"top",
        "{run}"
    );
}

#[test]
fn issue15_a_tree_with_unsafe_names_says_so_once_each_and_fails() {
    let srv = FakeServer::start(1, |frame, s| {
        match frame {
            Frame::Stat { .. } => send_frames(
                s,
                &[Frame::StatReply(StatReply {
                    kind: EntryKind::Dir,
                    size: 0,
                    mtime_ns: 0,
                    hash: None,
                })],
            )?,
            Frame::List { path } if path.is_empty() => {
                let entry = |name: &[u8]| {
                    Frame::ListEntry(ListEntry {
                        name: name.to_vec(),
                        kind: EntryKind::File,
                        size: 2,
                        mtime_ns: 0,
                    })
                };
                send_frames(
                    s,
                    &[
                        entry(b"good.txt"),
                        entry(b"new\nline.txt"),
                        Frame::ListEnd { count: 2 },
                    ],
                )?
            }
            Frame::Get(_) => {
                let mut out = Vec::new();
                Frame::FileHeader(FileHeader {
                    offset: 0,
                    length: 2,
                    size: 2,
                    mtime_ns: 0,
                })
                .encode(&mut out);
                out.extend_from_slice(b"ok");
                Frame::Trailer {
                    hash: *blake3::hash(b"ok").as_bytes(),
                }
                .encode(&mut out);
                s.write_all(&out)?;
            }
            _ => return Ok(Flow::Close),
        }
        Ok(Flow::Continue)
    });
    let out = tempfile::tempdir().unwrap();
    let run = ferry(out.path(), &["get", "-r", &srv.host(), ".", "-o", "t"]).fails();
    srv.join();
    assert_eq!(
        files_under(&out.path().join("t")),
        paths(&["good.txt"]),
        "{run}"
    );
    assert_eq!(
        run.stderr.matches("new\\nline.txt").count(),
        1,
        "each unsafe name once, escaped once\n{run}"
    );
    assert!(
        run.stderr
            .contains("ferry: skipped an unsafe name from the server: new\\nline.txt (control character in path)"),
        "{run}"
    );
    assert!(
        run.stderr
            .contains("saved t (1 file, 2 bytes, verified), skipped 1 (unsafe names)"),
        "{run}"
    );
}

#[test]
fn issue15_errors_point_the_right_way() {
    let base = tempfile::tempdir().unwrap();
    let run = ferry(base.path(), &["serve", "/no/such/dir", "--port", "0"]).fails();
    assert_eq!(
        run.stderr.trim(),
        "ferry: cannot serve /no/such/dir: no such directory",
        "{run}"
    );
    write_file(base.path(), "plain", b"x");
    let run = ferry(base.path(), &["serve", "plain", "--port", "0"]).fails();
    assert_eq!(
        run.stderr.trim(),
        "ferry: cannot serve plain: not a directory",
        "{run}"
    );

    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "sub/x", b"x");
    write_file(root.path(), "one.txt", b"1");
    let srv = Server::start(root.path(), &[]);
    let run = ferry(base.path(), &["get", &srv.host(), "sub", "-o", "dl/"]).fails();
    assert_eq!(
        run.stderr.trim(),
        "ferry: is a directory: sub (use -r to download a directory)",
        "{run}"
    );
    // One wording for path errors, whichever side finds them.
    let client_side = ferry(base.path(), &["get", &srv.host(), "a/..", "-o", "dl/"]).fails();
    let server_side = ferry(base.path(), &["get", &srv.host(), "a//b", "-o", "dl/"]).fails();
    for run in [&client_side, &server_side] {
        assert!(run.stderr.starts_with("ferry: invalid path: "), "{run}");
    }
    assert!(
        client_side.stderr.trim().ends_with(": a/.."),
        "{client_side}"
    );
    assert!(
        server_side.stderr.trim().ends_with(": a//b"),
        "{server_side}"
    );
    let run = ferry(base.path(), &["get", &srv.host(), "one.txt", "-o", "dl/"]).ok();
    assert_eq!(
        run.stderr.trim(),
        "saved dl/one.txt (1 byte, verified)",
        "{run}"
    );
    let help = ferry(base.path(), &["ls", "--help"]).ok();
    assert_eq!(help.stdout.matches("[default:").count(), 1, "{help}");
    assert!(
        help.stdout
            .contains("[default: the served directory itself]"),
        "{help}"
    );
}

#[test]
fn issue15_logs_a_person_can_read() {
    let root = tempfile::tempdir().unwrap();
    write_file(root.path(), "f.txt", b"f");
    // The default level, as a user runs it.
    let srv = Server::start_logging(root.path(), &[], None);
    for _ in 0..10 {
        let s = TcpStream::connect(srv.addr).unwrap();
        drop(s);
    }
    let out = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        ferry(out.path(), &["get", &srv.host(), "f.txt", "-q", "--force"]).ok();
    }
    let quiet = wait_until(PATIENCE, Duration::from_millis(20), || {
        srv.stderr().matches(" GET").count() >= 3
    });
    thread::sleep(Duration::from_millis(200));
    let log = srv.stderr();
    assert!(quiet, "{log}");
    assert_eq!(
        log.lines().count(),
        3,
        "one line per request, none per connection:\n{log}"
    );
    // And a client at debug level shows its steps.
    let run = ferry_env(
        out.path(),
        &["get", &srv.host(), "f.txt", "-q", "--force"],
        &[("RUST_LOG", "debug")],
    )
    .ok();
    for step in ["resolved", "connected", "hello exchanged", "GET"] {
        assert!(run.stderr.contains(step), "{step}\n{run}");
    }
}

/// Issue 13: a split download that *fails* (the server killed under it,
/// every lane's connection lost) keeps its ranges, and the re-run resumes
/// them instead of starting over.
#[test]
fn issue13_a_failed_split_download_resumes_its_ranges() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(48 * MIB, 17);
    write_file(root.path(), "big.bin", &data);
    let mut srv = Server::start(root.path(), &[]);
    let slow = SlowProxy::start(srv.addr, 3 * MIB as u64);
    let out = tempfile::tempdir().unwrap();
    let meta = out.path().join("dl/big.bin.part.meta");
    let child = ferry_spawn(
        out.path(),
        &["get", "-j", "4", &slow.host(), "big.bin", "-o", "dl/"],
    );
    let progressed = wait_until(PATIENCE, Duration::from_millis(20), || {
        recorded_progress(&meta).is_some_and(|n| n >= 4 * MIB as u64)
    });
    srv.kill();
    let run = finish(child, None, "ferry get -j 4 (server killed)".into());
    assert!(progressed, "no range progress recorded\n{run}");
    assert_eq!(run.status.code(), Some(1), "{run}");
    let kept = recorded_progress(&meta)
        .unwrap_or_else(|| panic!("the failed split download kept no ranges\n{run}"));
    assert!(kept >= 4 * MIB as u64, "{kept}\n{run}");
    let srv = Server::start(root.path(), &[]);
    let again = ferry(
        out.path(),
        &["get", "-j", "4", &srv.host(), "big.bin", "-o", "dl/"],
    )
    .ok();
    assert!(
        again.stderr.contains("of it resumed from the .part"),
        "{again}"
    );
    assert!(fs::read(out.path().join("dl/big.bin")).unwrap() == data);
    eprintln!(
        "FIGURE failed split download: {kept} bytes kept after the server was killed, resumed"
    );
}
