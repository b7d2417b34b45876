//! `root_resolver`: hostile paths against `ferry::server::SafeRoot` on a real
//! directory tree full of symlinks that try to leave it.
//!
//! The fixture is built once per process in a temporary directory:
//!
//! ```text
//! base/
//!   SECRET-outside.txt           the file nothing may ever open
//!   outside-dir/SECRET-in-outside-dir.txt
//!   root/                        the served root
//!     a.txt b.bin empty fifo "dir with space/文件.txt"
//!     sub/c.txt sub/deeper/d.txt
//!     link_in -> a.txt           link_sub -> sub     link_sub_file -> sub/c.txt
//!     sub/link_up_in -> ../a.txt                     (leaves sub, stays in root)
//!     link_out -> ../SECRET-outside.txt              link_out_abs -> /…/SECRET-outside.txt
//!     link_parent -> ..          link_root_abs -> /…/root
//!     link_outside_dir -> ../outside-dir             sub/up2 -> ../..
//!     chain1 -> chain2 -> sub/chain3 -> ../chain4 -> ../SECRET-outside.txt
//!     loop_a <-> loop_b          dangling -> nowhere
//! ```
//!
//! The input's first byte picks a mode: even, the rest is the path bytes as
//! they are; odd, each following byte picks a token (a fixture name, `..`,
//! `.`, `\`, NUL, ...) and the tokens are joined with `/` (a byte with its
//! high bit set joins without the `/`). The raw mode is the honest one; the
//! token mode gets deep into the tree within seconds.
//!
//! Invariants checked, besides "never panics":
//!
//! * `open_file` succeeds only for a regular file inside the root: the opened
//!   file's (dev, ino) is one of the root's regular files and never a
//!   secret's, and the `FileInfo` it returns is that file's;
//! * `stat` never describes a secret, nor a directory outside the root;
//! * `list` never lists a directory outside the root (no secret's name, no
//!   `root`/`outside-dir` entry) and never reports a followed symlink to a
//!   secret (no file of the secret's size);
//! * a path `validate_path` refuses fails all three calls with
//!   `PathError::Invalid`, before touching the file system.

#![no_main]

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ferry::protocol::{validate_path, EntryKind};
use ferry::storage::SafeRoot;
use ferry::storage::{FileInfo, PathError};
use libfuzzer_sys::fuzz_target;

/// A size no file inside the root has, so a listing that followed a symlink
/// to the secret would show it.
const SECRET_LEN: usize = 7777;

/// Names that only exist outside the root.
const OUTSIDE_NAMES: [&str; 4] = [
    "SECRET-outside.txt",
    "SECRET-in-outside-dir.txt",
    "outside-dir",
    "root",
];

const TOKENS: &[&str] = &[
    "a.txt",
    "b.bin",
    "empty",
    "fifo",
    "dir with space",
    "文件.txt",
    "sub",
    "c.txt",
    "deeper",
    "d.txt",
    "link_in",
    "link_sub",
    "link_sub_file",
    "link_up_in",
    "link_out",
    "link_out_abs",
    "link_parent",
    "link_root_abs",
    "link_outside_dir",
    "up2",
    "chain1",
    "chain2",
    "chain3",
    "chain4",
    "loop_a",
    "loop_b",
    "dangling",
    "SECRET-outside.txt",
    "outside-dir",
    "SECRET-in-outside-dir.txt",
    "root",
    "..",
    ".",
    "",
    "/",
    "\\",
    "\0",
    "%2e%2e",
    "…",
    "\u{85}",
];

struct Fixture {
    root: SafeRoot,
    /// (dev, ino) of every regular file inside the root.
    inside_files: HashSet<(u64, u64)>,
    /// (dev, ino) of every directory inside the root, the root included.
    inside_dirs: HashSet<(u64, u64)>,
    /// (dev, ino) of the secret files.
    secrets: HashSet<(u64, u64)>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| build_fixture().expect("building the fixture tree"))
}

fn id(p: &Path) -> std::io::Result<(u64, u64)> {
    let m = fs::symlink_metadata(p)?;
    Ok((m.dev(), m.ino()))
}

fn build_fixture() -> std::io::Result<Fixture> {
    // Kept for the life of the process (a static is never dropped); run.sh
    // points TMPDIR into fuzz/target and empties it between runs.
    let base: PathBuf = tempfile::Builder::new()
        .prefix("ferry-fuzz-root-")
        .tempdir()?
        .keep();
    let base = base.canonicalize()?;
    let root = base.join("root");
    let secret = base.join("SECRET-outside.txt");
    fs::write(&secret, vec![b's'; SECRET_LEN])?;
    fs::create_dir(base.join("outside-dir"))?;
    let secret2 = base.join("outside-dir/SECRET-in-outside-dir.txt");
    fs::write(&secret2, vec![b's'; SECRET_LEN])?;

    fs::create_dir_all(root.join("sub/deeper"))?;
    fs::create_dir(root.join("dir with space"))?;
    let files: [(&str, &[u8]); 6] = [
        ("a.txt", b"alpha\n"),
        ("b.bin", &[0xAB; 100]),
        ("empty", b""),
        ("sub/c.txt", b"charlie\n"),
        ("sub/deeper/d.txt", b"delta\n"),
        ("dir with space/文件.txt", "文件\n".as_bytes()),
    ];
    for (name, body) in files {
        fs::write(root.join(name), body)?;
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;

    let links: [(&str, PathBuf); 17] = [
        ("link_in", "a.txt".into()),
        ("link_sub", "sub".into()),
        ("link_sub_file", "sub/c.txt".into()),
        ("sub/link_up_in", "../a.txt".into()),
        ("link_out", "../SECRET-outside.txt".into()),
        ("link_out_abs", secret.clone()),
        ("link_parent", "..".into()),
        ("link_root_abs", root.clone()),
        ("link_outside_dir", "../outside-dir".into()),
        ("sub/up2", "../..".into()),
        ("chain1", "chain2".into()),
        ("chain2", "sub/chain3".into()),
        ("sub/chain3", "../chain4".into()),
        ("chain4", "../SECRET-outside.txt".into()),
        ("loop_a", "loop_b".into()),
        ("loop_b", "loop_a".into()),
        ("dangling", "nowhere".into()),
    ];
    for (name, target) in links {
        symlink(target, root.join(name))?;
    }

    let inside_files = files
        .iter()
        .map(|(name, _)| id(&root.join(name)))
        .collect::<Result<_, _>>()?;
    let inside_dirs = ["", "sub", "sub/deeper", "dir with space"]
        .iter()
        .map(|d| id(&root.join(d)))
        .collect::<Result<_, _>>()?;
    let secrets = [id(&secret)?, id(&secret2)?].into_iter().collect();
    Ok(Fixture {
        root: SafeRoot::open(&root)?,
        inside_files,
        inside_dirs,
        secrets,
    })
}

fn path_from_input(data: &[u8]) -> Vec<u8> {
    let (mode, rest) = match data.split_first() {
        Some((m, rest)) => (*m, rest),
        None => return Vec::new(),
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    for (i, b) in rest.iter().enumerate() {
        if i > 0 && b & 0x80 == 0 {
            out.push(b'/');
        }
        out.extend_from_slice(TOKENS[(b & 0x7f) as usize % TOKENS.len()].as_bytes());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let path = path_from_input(data);
    let valid = validate_path(&path).is_ok();

    match fx.root.open_file(&path) {
        Ok((file, info)) => {
            assert!(valid, "opened a path validate_path refuses: {path:?}");
            let real = FileInfo::of_file(&file).expect("fstat of an opened file");
            let key = (real.dev, real.ino);
            assert!(
                !fx.secrets.contains(&key),
                "open_file({:?}) opened a SECRET outside the root",
                String::from_utf8_lossy(&path)
            );
            assert!(
                fx.inside_files.contains(&key),
                "open_file({path:?}) opened a file that is not in the root"
            );
            assert_eq!((info.dev, info.ino), key);
            assert_eq!(info.kind, EntryKind::File);
        }
        Err(e) => check_refusal(valid, &e, &path),
    }

    match fx.root.stat(&path) {
        Ok(info) => {
            assert!(valid, "stat of a path validate_path refuses: {path:?}");
            let key = (info.dev, info.ino);
            assert!(
                !fx.secrets.contains(&key),
                "stat({path:?}) described a SECRET outside the root"
            );
            match info.kind {
                EntryKind::File => assert!(
                    fx.inside_files.contains(&key),
                    "stat({path:?}) described a file that is not in the root"
                ),
                EntryKind::Dir => assert!(
                    fx.inside_dirs.contains(&key),
                    "stat({path:?}) described a directory outside the root"
                ),
                _ => {}
            }
        }
        Err(e) => check_refusal(valid, &e, &path),
    }

    match fx.root.list(&path) {
        Ok(entries) => {
            assert!(valid, "listed a path validate_path refuses: {path:?}");
            for e in &entries {
                let name = String::from_utf8_lossy(&e.name);
                assert!(
                    !OUTSIDE_NAMES.contains(&name.as_ref()),
                    "list({path:?}) listed a directory outside the root (saw {name:?})"
                );
                assert!(
                    !(e.kind == EntryKind::File && e.size == SECRET_LEN as u64),
                    "list({path:?}) followed {name:?} to a SECRET"
                );
            }
        }
        Err(e) => check_refusal(valid, &e, &path),
    }
});

fn check_refusal(valid: bool, e: &PathError, path: &[u8]) {
    if !valid {
        assert!(
            matches!(e, PathError::Invalid(_)),
            "invalid path {path:?} refused as {e:?}, not as invalid"
        );
    }
    // Every refusal maps to a wire code and prints.
    let _ = e.code();
    let _ = e.to_string();
}
