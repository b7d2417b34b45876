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
