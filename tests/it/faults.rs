//! Faults under a download: the server SIGKILLed and restarted over and
//! over, the served file changing under the transfer, the client's disk
//! refusing writes, the network cutting mid-body. The claims under test are
//! the README's: a file under its final name is always complete and
//! verified; an interrupted download resumes; a server fault never turns
//! into wrong bytes.
//!
//! Slowness is made, not waited for: a [`Relay`] throttles the server's
//! bytes so a fault can land mid-body, and kills are triggered by the
//! `.part` reaching a size, polled with a bound. Random choices come from a
//! fixed seed (override with `FERRY_FAULT_SEED`) and are printed, so a
//! failure reproduces. No test asserts how long anything took; the figures
//! printed with `eprintln!` are for the reliability report
//! (`cargo test --test it faults -- --nocapture`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferry::protocol::{FileHeader, Frame, GetRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(30);

const MIB: u64 = 1024 * 1024;

/// Bytes the server sends before the first body byte of a GET on a fresh
/// connection: its magic, `Welcome` (4 + 11) and `FileHeader` (4 + 33).
const PREAMBLE: u64 = 8 + 15 + 37;

fn seed(default: u64) -> u64 {
    std::env::var("FERRY_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn put(root: &Path, rel: &str, data: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, data).unwrap();
    p
}

fn part_of(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Asserts the part file holds a prefix of `data`; returns its length.
fn assert_part_is_prefix(part: &Path, data: &[u8], context: &dyn std::fmt::Display) -> u64 {
    let got = fs::read(part).unwrap_or_default();
    assert!(
        got.len() <= data.len() && got[..] == data[..got.len()],
        "{} ({} bytes) is not a prefix of the served file\n{context}",
        part.display(),
        got.len()
    );
    got.len() as u64
}

/// Re-runs `ferry get <srv> big.bin -o dl` in `out`, straight to the
/// server, and asserts it resumed at `at`, produced exactly `data` as
/// `dl/big.bin`, and left nothing else in `dl`.
#[track_caller]
fn rerun_resumes_to_identical_bytes(out: &Path, srv: &Server, at: u64, data: &[u8]) {
    let dl = out.join("dl");
    let run = ferry(out, &["get", &srv.host(), "big.bin", "-o", "dl/"]).ok();
    assert!(run.stderr.contains(&format!("resumed at {at}")), "{run}");
    assert!(
        fs::read(dl.join("big.bin")).unwrap() == data,
        "final file differs"
    );
    assert_eq!(files_under(&dl), vec![PathBuf::from("big.bin")], "{run}");
}

/// The requested offset of the client's Get and the server's FileHeader,
/// read from what a relay captured.
fn get_and_header(report: &RelayReport) -> (Option<GetRequest>, Option<FileHeader>) {
    let get = frames_in(&report.up_head)
        .into_iter()
        .find_map(|f| match f {
            Frame::Get(g) => Some(g),
            _ => None,
        });
    let header = frames_in(&report.down_head)
        .into_iter()
        .find_map(|f| match f {
            Frame::FileHeader(h) => Some(h),
            _ => None,
        });
    (get, header)
}

/// Watches a final download name from a thread of its own: whenever the
/// name exists, its size must already be the full size. Records every
/// violation; never blocks the test.
struct FinalNameWatch {
    stop: Arc<AtomicBool>,
    polls: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    bad: Arc<Mutex<Vec<u64>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FinalNameWatch {
    fn start(path: PathBuf, full: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let polls = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let (stop2, polls2, seen2, bad2) = (stop.clone(), polls.clone(), seen.clone(), bad.clone());
        let thread = thread::spawn(move || {
            // Bounded: the test stops it; this cap only guards a lost stop.
            let deadline = Instant::now() + Duration::from_secs(600);
            while !stop2.load(Ordering::SeqCst) && Instant::now() < deadline {
                if let Ok(m) = fs::metadata(&path) {
                    seen2.fetch_add(1, Ordering::SeqCst);
                    if m.len() != full {
                        bad2.lock().unwrap().push(m.len());
                    }
                }
                polls2.fetch_add(1, Ordering::SeqCst);
                thread::sleep(Duration::from_micros(500));
            }
        });
        FinalNameWatch {
            stop,
            polls,
            seen,
            bad,
            thread: Some(thread),
        }
    }

    /// Stops watching; returns (polls, polls that saw the name, bad sizes).
    fn finish(mut self) -> (u64, u64, Vec<u64>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        (
            self.polls.load(Ordering::SeqCst),
            self.seen.load(Ordering::SeqCst),
            self.bad.lock().unwrap().clone(),
        )
    }
}

/// Runs `ferry ARGS` in `cwd` on a thread, so the test can act while it
/// downloads.
fn ferry_in_background(cwd: &Path, args: &[&str]) -> thread::JoinHandle<Run> {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ferry(&cwd, &args)
    })
}

// ---------------------------------------------------------------------------
// The server killed, again and again

/// Where one attempt's server dies.
#[derive(Debug, Clone, Copy)]
enum KillAt {
    /// As soon as the client has sent its first bytes (handshake or
    /// header in flight), plus a few random milliseconds.
    Handshake(u64),
    /// Once the `.part` holds at least this many bytes.
    PartSize(u64),
}

#[test]
fn server_sigkilled_twenty_times_mid_download_then_resumed_to_identical_bytes() {
    const SIZE: u64 = 64 * MIB;
    const KILLS: usize = 20;
    // Throttled so a kill lands mid-body: 64 MiB take about 2.7 s in all.
    const RATE: u64 = 24 * MIB;
    let seed = seed(0xfe77_0001);
    let mut rng = StdRng::seed_from_u64(seed);

    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE as usize, seed);
    put(root.path(), "big.bin", &data);
    let out = tempfile::tempdir().unwrap();
    let dl = out.path().join("dl");
    let target = dl.join("big.bin");
    let part = part_of(&target);

    // The plan, fixed by the seed: a few kills during the handshake, the
    // rest at sorted random sizes, none in the last 2 MiB (so the client
    // cannot finish between reaching the size and the kill).
    let mut sizes: Vec<u64> = (0..KILLS)
        .map(|_| rng.gen_range(256 * 1024..SIZE - 2 * MIB))
        .collect();
    sizes.sort_unstable();
    let plan: Vec<KillAt> = sizes
        .into_iter()
        .map(|s| {
            if rng.gen_ratio(3, 20) {
                KillAt::Handshake(rng.gen_range(0..5))
            } else {
                KillAt::PartSize(s)
            }
        })
        .collect();

    let watch = FinalNameWatch::start(target.clone(), SIZE);
    let mut resumed = 0usize;
    let mut killed_at = Vec::new();
    for (i, &at) in plan.iter().enumerate() {
        let before = file_len(&part);
        let mut srv = Server::start(root.path(), &[]);
        let relay = Relay::start(
            srv.addr,
            RelayOptions {
                rate: Some(RATE),
                small_upstream_buffer: true,
                ..Default::default()
            },
        );
        let client =
            ferry_in_background(out.path(), &["get", &relay.host(), "big.bin", "-o", "dl/"]);
        let reached = match at {
            KillAt::Handshake(ms) => {
                let ok = wait_until(PATIENCE, Duration::from_micros(200), || {
                    relay.up_bytes() > 0
                });
                thread::sleep(Duration::from_millis(ms));
                ok
            }
            // At least one new byte, whatever the plan says.
            KillAt::PartSize(s) => {
                let s = s.max(before + 1);
                wait_until(PATIENCE, Duration::from_micros(500), || {
                    file_len(&part) >= s
                })
            }
        };
        // The server dies; with it the connection (a crashed host's
        // unsent bytes are lost too).
        sigkill(srv.pid());
        relay.cut();
        let run = client.join().expect("client thread");
        let report = relay.join();
        srv.kill();
        assert!(
            reached,
            "attempt {i}: the download never reached {at:?}\n{run}"
        );
        let run = run.fails();
        assert!(
            run.stderr.starts_with("ferry: ") && run.stderr.lines().count() == 1,
            "attempt {i}: not one clean error line\n{run}"
        );
        assert!(
            !target.exists(),
            "attempt {i}: final name exists after a kill\n{run}"
        );
        let after = assert_part_is_prefix(&part, &data, &run);
        assert!(after >= before, "attempt {i}: the part shrank\n{run}");
        let (get, header) = get_and_header(&report);
        if let Some(get) = &get {
            assert_eq!(
                get.offset, before,
                "attempt {i}: asked for the wrong offset"
            );
            assert!(
                before == 0 || get.if_unchanged.is_some(),
                "attempt {i}: resumed without a validator: {get:?}"
            );
        }
        if let Some(h) = header {
            assert!(
                h.offset == before,
                "attempt {i}: server answered offset {} for a part of {before}",
                h.offset
            );
            if h.offset > 0 {
                resumed += 1;
            }
        }
        killed_at.push(after);
    }

    // The 21st attempt runs to the end, straight to the server.
    let srv = Server::start(root.path(), &[]);
    let before = file_len(&part);
    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).ok();
    let (polls, seen, bad) = watch.finish();
    assert!(
        run.stderr.contains(&format!("resumed at {before}")),
        "the last attempt did not resume from {before}\n{run}"
    );
    assert!(bad.is_empty(), "final name seen incomplete: sizes {bad:?}");
    assert!(fs::read(&target).unwrap() == data, "final file differs");
    assert_eq!(
        files_under(&dl),
        vec![PathBuf::from("big.bin")],
        "leftovers\n{run}"
    );
    eprintln!(
        "FIGURE kills: seed {seed:#x}; {KILLS} SIGKILLs survived in a {} MiB download; \
         {resumed} of {KILLS} killed attempts had resumed (FileHeader offset > 0), \
         then the last run printed 'resumed at {before}'; part sizes at each kill: {killed_at:?}; \
         final name polled {polls} times, present in {seen} polls, never incomplete; bytes identical",
        SIZE / MIB
    );
}

// ---------------------------------------------------------------------------
// The served file changes under a transfer

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// Cut to half its size, in place.
    Truncate,
    /// Appended to, in place.
    Grow,
    /// Same size, other bytes, in place (mtime moves).
    Rewrite,
    /// Same size, other bytes, in place, mtime put back.
    RewriteKeepMtime,
    /// A new file renamed over the old name (the server's open file is
    /// the old inode, which stays whole).
    Replace,
}

impl Change {
    /// Applies the change; returns the file's new content.
    fn apply(self, path: &Path, old: &[u8], seed: u64) -> Vec<u8> {
        match self {
            Change::Truncate => {
                let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                f.set_len(old.len() as u64 / 2).unwrap();
                old[..old.len() / 2].to_vec()
            }
            Change::Grow => {
                let extra = random_bytes(MIB as usize, seed);
                let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
                f.write_all(&extra).unwrap();
                [old, &extra[..]].concat()
            }
            Change::Rewrite | Change::RewriteKeepMtime => {
                let mtime = fs::metadata(path).unwrap().modified().unwrap();
                let new = random_bytes(old.len(), seed);
                let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all(&new).unwrap();
                if self == Change::RewriteKeepMtime {
                    f.set_modified(mtime).unwrap();
                }
                new
            }
            Change::Replace => {
                let new = random_bytes(old.len(), seed);
                let tmp = path.with_extension("tmp");
                fs::write(&tmp, &new).unwrap();
                fs::rename(&tmp, path).unwrap();
                new
            }
        }
    }

    /// Whether a download that started before the change may end with
    /// the old bytes: the server's open file still holds that version
    /// whole (an append leaves the first `size` bytes alone; a rename
    /// leaves the old inode alone).
    fn old_version_survives(self) -> bool {
        matches!(self, Change::Grow | Change::Replace)
    }
}

#[test]
fn served_file_changed_mid_download_never_yields_wrong_bytes() {
    const SIZE: usize = 24 * MIB as usize;
    // The relay pauses the transfer after this many bytes while the file
    // changes. With a small upstream buffer the server is then at most its
    // socket buffers (a few MiB) ahead, so most of the file is still to be
    // read when it changes, however slow or fast anything runs.
    const HOLD: u64 = 2 * MIB;
    let seed = seed(0xfe77_0002);
    let root = tempfile::tempdir().unwrap();
    let control = random_bytes(300_000, seed ^ 1);
    put(root.path(), "control.bin", &control);
    let srv = Server::start(root.path(), &[]);
    let mut outcomes = Vec::new();
    for (i, change) in [
        Change::Truncate,
        Change::Grow,
        Change::Rewrite,
        Change::RewriteKeepMtime,
        Change::Replace,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("{change:?}.bin");
        let old = random_bytes(SIZE, seed + 10 * i as u64);
        let path = put(root.path(), &name, &old);
        let out = tempfile::tempdir().unwrap();
        let target = out.path().join("dl").join(&name);
        let part = part_of(&target);
        let relay = Relay::start(
            srv.addr,
            RelayOptions {
                hold_at: Some(HOLD),
                small_upstream_buffer: true,
                ..Default::default()
            },
        );
        let client = ferry_in_background(out.path(), &["get", &relay.host(), &name, "-o", "dl/"]);
        let reached = wait_until(PATIENCE, Duration::from_millis(1), || {
            relay.down_bytes() >= HOLD && file_len(&part) > 0
        });
        let new = change.apply(&path, &old, seed + 10 * i as u64 + 5);
        relay.release();
        let run = client.join().expect("client thread");
        drop(relay);
        assert!(
            reached,
            "{change:?}: the transfer never reached {HOLD} bytes\n{run}"
        );

        // During the change: a clean failure, or exactly one real version.
        let first = if run.status.success() {
            let got = fs::read(&target).unwrap();
            if got == new {
                "succeeded with the new bytes"
            } else if got == old && change.old_version_survives() {
                "succeeded with the old version (still whole in the server's open file)"
            } else {
                panic!(
                    "{change:?}: reported success with wrong bytes ({} bytes, neither old nor new)\n{run}",
                    got.len()
                );
            }
        } else {
            assert!(
                run.stderr.starts_with("ferry: ")
                    && run.stderr.lines().count() == 1
                    && (run.stderr.contains("hash mismatch")
                        || run.stderr.contains("connection lost")),
                "{change:?}: unclear failure\n{run}"
            );
            assert!(
                !target.exists(),
                "{change:?}: final name exists after a failure\n{run}"
            );
            if run.stderr.contains("hash mismatch") {
                "failed: hash mismatch"
            } else {
                "failed: connection lost (server stopped mid-body)"
            }
        };

        // Afterwards, a re-run ends with exactly the new bytes (--force:
        // after a success the old version is there, and differs).
        let again = ferry(
            out.path(),
            &["get", &srv.host(), &name, "-o", "dl/", "--force"],
        )
        .ok();
        assert!(
            fs::read(&target).unwrap() == new,
            "{change:?}: re-run saved wrong bytes\n{again}"
        );
        assert_eq!(
            files_under(&out.path().join("dl")),
            vec![PathBuf::from(&name)],
            "{change:?}: leftovers\n{again}"
        );
        // And the server still serves a well-behaved client.
        let ctl = ferry(out.path(), &["get", &srv.host(), "control.bin", "-q"]).ok();
        assert!(
            fs::read(out.path().join("control.bin")).unwrap() == control,
            "{ctl}"
        );
        outcomes.push(format!("{change:?}: {first}"));
    }
    let log = srv.stderr();
    assert!(!log.contains("panicked"), "server log:\n{log}");
    eprintln!(
        "FIGURE file changed mid-download (seed {seed:#x}): {}; every re-run got the new bytes",
        outcomes.join("; ")
    );
}

// ---------------------------------------------------------------------------
// The client's disk refuses writes

/// Runs `ferry ARGS` with RLIMIT_FSIZE set to `limit` bytes: the kernel
/// refuses writes past it (EFBIG), as a full disk would refuse them.
fn ferry_with_file_size_limit(cwd: &Path, args: &[&str], limit: u64) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(ferry_bin());
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and makes one
    // system call (setrlimit), which is async-signal-safe; it allocates
    // nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            use rustix::process::{setrlimit, Resource, Rlimit};
            setrlimit(
                Resource::Fsize,
                Rlimit {
                    current: Some(limit),
                    maximum: Some(limit),
                },
            )
            .map_err(std::io::Error::from)
        });
    }
    let child = cmd.spawn().expect("spawn ferry");
    finish(
        child,
        None,
        format!("(RLIMIT_FSIZE={limit}) ferry {}", args.join(" ")),
    )
}

#[test]
fn disk_full_mid_download_fails_cleanly_keeps_part_and_rerun_resumes() {
    const SIZE: usize = 8 * MIB as usize;
    // Not page-aligned, so the last write is cut short inside a page.
    const LIMIT: u64 = 3 * MIB + 12_345;
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 0xd15c);
    put(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let dl = out.path().join("dl");
    let target = dl.join("big.bin");

    let run = ferry_with_file_size_limit(
        out.path(),
        &["get", &srv.host(), "big.bin", "-o", "dl/"],
        LIMIT,
    )
    .fails();
    assert_eq!(
        run.status.code(),
        Some(1),
        "not a plain failure exit\n{run}"
    );
    assert!(
        run.stderr.starts_with("ferry: ")
            && run.stderr.contains("dl/big.bin.part")
            && run.stderr.contains("File too large"),
        "error does not name the file and the cause\n{run}"
    );
    assert!(!target.exists(), "final name exists\n{run}");
    let kept = assert_part_is_prefix(&part_of(&target), &data, &run);
    assert!(kept > 0 && kept <= LIMIT, "part of {kept} bytes\n{run}");

    rerun_resumes_to_identical_bytes(out.path(), &srv, kept, &data);
    eprintln!(
        "FIGURE disk full (RLIMIT_FSIZE {LIMIT}): exit 1 with {:?}; .part kept at {kept} bytes; re-run resumed and verified",
        run.stderr.trim_end()
    );
}

/// Makes a directory refuse new entries, even for root (who ignores
/// permission bits): `chattr +i` where we are root, `chmod 555` elsewhere.
/// Undone on drop, so the temporary directory can be removed.
struct Unwritable {
    dir: PathBuf,
    how: &'static str,
}

impl Unwritable {
    fn make(dir: &Path) -> Result<Unwritable, String> {
        use std::os::unix::fs::PermissionsExt;
        if rustix::process::geteuid().is_root() {
            let st = Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .output()
                .map_err(|e| format!("chattr not available: {e}"))?;
            if !st.status.success() {
                return Err(format!(
                    "chattr +i failed: {}",
                    String::from_utf8_lossy(&st.stderr).trim()
                ));
            }
            Ok(Unwritable {
                dir: dir.to_path_buf(),
                how: "chattr +i",
            })
        } else {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o555))
                .map_err(|e| e.to_string())?;
            Ok(Unwritable {
                dir: dir.to_path_buf(),
                how: "chmod 555",
            })
        }
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.how == "chattr +i" {
            let _ = Command::new("chattr").arg("-i").arg(&self.dir).status();
        } else {
            let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn unwritable_output_refuses_cleanly_and_a_rename_refused_mid_download_resumes() {
    const SIZE: usize = 12 * MIB as usize;
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, 0x0b0e);
    put(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);

    // An output "directory" below a regular file can never be created.
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("plain"), b"a file").unwrap();
    let run = ferry(
        out.path(),
        &["get", &srv.host(), "big.bin", "-o", "plain/dl/"],
    )
    .fails();
    assert!(
        run.stderr.starts_with("ferry: ") && run.stderr.contains("plain/dl"),
        "{run}"
    );
    assert_eq!(
        files_under(out.path()),
        vec![PathBuf::from("plain")],
        "{run}"
    );
    let below_file = run.stderr.trim_end().to_string();

    // An existing directory that takes no new entries.
    let dl = out.path().join("dl");
    fs::create_dir(&dl).unwrap();
    let guard = match Unwritable::make(&dl) {
        Ok(g) => g,
        Err(why) => {
            eprintln!("FIGURE unwritable output: below a file: {below_file:?}; read-only directory part SKIPPED: {why}");
            return;
        }
    };
    let run = ferry(out.path(), &["get", &srv.host(), "big.bin", "-o", "dl/"]).fails();
    assert!(
        run.stderr.starts_with("ferry: ") && run.stderr.contains("dl/big.bin.part"),
        "error does not name the file\n{run}"
    );
    assert!(files_under(&dl).is_empty(), "{run}");
    let refused = run.stderr.trim_end().to_string();
    drop(guard);

    // Made unwritable mid-download: the body lands in the already open
    // part, but the final rename is refused. The part must survive,
    // complete, and a re-run must finish it without fetching it again.
    let relay = Relay::start(
        srv.addr,
        RelayOptions {
            hold_at: Some(MIB),
            ..Default::default()
        },
    );
    let target = dl.join("big.bin");
    let part = part_of(&target);
    let client = ferry_in_background(out.path(), &["get", &relay.host(), "big.bin", "-o", "dl/"]);
    let reached = wait_until(PATIENCE, Duration::from_millis(1), || {
        relay.down_bytes() >= MIB && file_len(&part) > 0
    });
    let guard = Unwritable::make(&dl).expect("made unwritable once already");
    relay.release();
    let run = client.join().expect("client thread");
    drop(relay);
    assert!(reached, "the transfer never reached 1 MiB\n{run}");
    let run = run.fails();
    assert!(
        run.stderr.starts_with("ferry: ") && run.stderr.contains("dl/big.bin"),
        "error does not name the file\n{run}"
    );
    assert!(!target.exists(), "{run}");
    let kept = assert_part_is_prefix(&part, &data, &run);
    assert_eq!(kept, SIZE as u64, "the part should be complete\n{run}");
    let mid = run.stderr.trim_end().to_string();
    let how = guard.how;
    drop(guard);

    rerun_resumes_to_identical_bytes(out.path(), &srv, SIZE as u64, &data);
    eprintln!(
        "FIGURE unwritable output ({how}): below a file: {below_file:?}; read-only dir: {refused:?}; \
         made read-only mid-download: {mid:?}, .part kept complete, re-run 'resumed at {SIZE}' and verified"
    );
}

// ---------------------------------------------------------------------------
// The network cuts mid-body, again and again

#[test]
fn network_cut_at_varying_points_resumes_every_time_to_identical_bytes() {
    const SIZE: usize = 16 * MIB as usize;
    let seed = seed(0xfe77_0004);
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(SIZE, seed);
    put(root.path(), "big.bin", &data);
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    let dl = out.path().join("dl");
    let target = dl.join("big.bin");
    let part = part_of(&target);

    // Inside the magic, inside Welcome, inside FileHeader, right at and
    // just after the body's start, then random points in the body.
    let mut cuts: Vec<u64> = vec![1, 8, 20, 40, PREAMBLE, PREAMBLE + 1];
    cuts.extend((0..8).map(|_| PREAMBLE + rng.gen_range(1..(3 * MIB / 2))));

    let mut resumed = 0;
    let mut parts = Vec::new();
    for (i, &cut) in cuts.iter().enumerate() {
        let before = file_len(&part);
        let relay = Relay::start(
            srv.addr,
            RelayOptions {
                cut_after: Some(cut),
                ..Default::default()
            },
        );
        let run = ferry(out.path(), &["get", &relay.host(), "big.bin", "-o", "dl/"]);
        let report = relay.join();
        let run = run.fails();
        assert_eq!(
            report.down, cut,
            "cut {i}: the relay let {} through",
            report.down
        );
        assert!(
            run.stderr.starts_with("ferry: connection lost") && run.stderr.lines().count() == 1,
            "cut {i} after {cut} bytes: unclear error\n{run}"
        );
        assert!(!target.exists(), "cut {i}: final name exists\n{run}");
        let after = assert_part_is_prefix(&part, &data, &run);
        // Every body byte that got through is kept; nothing else.
        let body = cut.saturating_sub(PREAMBLE);
        assert_eq!(
            after,
            before + body,
            "cut {i} after {cut} bytes: part went from {before} to {after}\n{run}"
        );
        let (get, header) = get_and_header(&report);
        // The client asks only once it has the server's Welcome.
        if cut >= 8 + 15 {
            let get = get.expect("the client's Get went through");
            assert_eq!(get.offset, before, "cut {i}: wrong resume offset");
        }
        if let Some(h) = header {
            assert_eq!(h.offset, before, "cut {i}: server did not resume");
            if h.offset > 0 {
                resumed += 1;
            }
        }
        parts.push(after);
    }
    let before = file_len(&part);
    rerun_resumes_to_identical_bytes(out.path(), &srv, before, &data);
    eprintln!(
        "FIGURE network cuts (seed {seed:#x}): {} cuts after {cuts:?} server bytes; part grew {parts:?}; \
         {resumed} attempts resumed mid-file, final run 'resumed at {before}', bytes identical",
        cuts.len()
    );
}
