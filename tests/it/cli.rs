//! Smoke tests of the CLI contract.

use crate::support::*;

#[test]
fn get_downloads_byte_identical_and_ls_say_work() {
    let root = tempfile::tempdir().unwrap();
    let data = random_bytes(3 * 1024 * 1024 + 17, 1);
    std::fs::write(root.path().join("data.bin"), &data).unwrap();
    let srv = Server::start(root.path(), &[]);
    let out = tempfile::tempdir().unwrap();
    ferry(out.path(), &["get", &srv.host(), "data.bin", "-o", "dl/"]).ok();
    assert_eq!(std::fs::read(out.path().join("dl/data.bin")).unwrap(), data);
    let ls = ferry(out.path(), &["ls", &srv.host()]).ok();
    assert!(ls.stdout.contains("data.bin"), "{ls}");
    let say = ferry(out.path(), &["say", &srv.host(), "你好"]).ok();
    assert_eq!(say.stdout.trim(), "已收到你的信息", "{say}");
    assert!(srv.wait_stdout(std::time::Duration::from_secs(5), |l| l.ends_with(": 你好")));
}

/// Issue 13: completion scripts for every shell clap_complete knows (the
/// bash one checked by `bash -n` and by completing `ferry p`), and the
/// manual page (roff, one page per command).
#[test]
fn completions_and_man_page_print() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, mark) in [
        ("bash", "_ferry()"),
        ("zsh", "#compdef ferry"),
        ("fish", "complete -c ferry"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[ferry]"),
    ] {
        let r = ferry(dir.path(), &["completions", shell]).ok();
        assert!(r.stdout.contains(mark), "{shell}:\n{}", r.stdout);
        assert!(
            r.stdout.contains("put") && r.stdout.contains("max-upload-size"),
            "{shell}"
        );
    }
    let bash = ferry(dir.path(), &["completions", "bash"]).ok().stdout;
    let script = dir.path().join("ferry.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(ferry p); COMP_CWORD=1; _ferry ferry p ferry; echo \"${{COMPREPLY[*]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let words = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert_eq!(words.trim(), "put", "bash completed `ferry p` to {words:?}");
    let man = ferry(dir.path(), &["man"]).ok().stdout;
    assert!(man.contains(".TH ferry 1"), "{man:.300}");
    for page in [
        "ferry-serve",
        "ferry-get",
        "ferry-put",
        "ferry-ls",
        "ferry-say",
    ] {
        assert!(man.contains(&format!(".TH {page} 1")), "no page {page}");
    }
    assert!(man.contains("\\-\\-upload"));
}
