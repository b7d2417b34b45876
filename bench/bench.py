#!/usr/bin/env python3
"""ferry's benchmark driver: runs every scenario against ferry and its peers
(iperf3, netcat, nginx + curl, python -m http.server, rsync, dufs, miniserve;
as HTTP clients curl, aria2c, wget) on this machine
and prints one markdown table. bench/run.sh installs the peers, builds ferry
and then runs this; see bench/README.md for what each scenario measures.

Progress goes to stderr; the table (and a few lines under it) to stdout and
to bench/out/latest.md. Every process it starts is in its own process group
and is killed on exit; every namespace it creates is deleted.
"""

from __future__ import annotations

import atexit
import ctypes
import hashlib
import datetime
import json
import math
import mmap
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
OUT = BENCH / "out"
LOGS = OUT / "logs"
FERRY = Path(os.environ.get("FB_FERRY", ROOT / "target" / "release" / "ferry"))
PY = sys.executable or "python3"


def env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_float(name: str, default: float) -> float:
    v = os.environ.get(name, "")
    return float(v) if v.strip() else default


# ---------------------------------------------------------------- settings
N = env_int("FB_N", 5)  # runs per cell; the table shows the median
BIG_MIB = env_int("FB_BIG_MIB", 1024)  # scenario 1 file
TREE_FILES = env_int("FB_TREE_FILES", 2000)  # scenario 2
TREE_KIB = env_int("FB_TREE_KIB", 4)
CLIENTS = env_int("FB_CLIENTS", 100)  # scenario 3
CLIENT_MIB = env_int("FB_CLIENT_MIB", 10)
IDLE = env_int("FB_IDLE", 1000)  # scenario 4
IDLE_DL = env_int("FB_IDLE_DL", 10)
MID_MIB = env_int("FB_MID_MIB", 100)  # scenarios 4 and 5
LOSSY_N = env_int("FB_LOSSY_N", N)
LOSSY_SECS = env_float("FB_LOSSY_SECS", 6.0)  # each lossy-link run is cut off here
LOSSY_DELAY_MS = env_float("FB_LOSSY_DELAY_MS", 25.0)  # one way: RTT is twice this
LOSSY_LOSS_PCT = env_float("FB_LOSSY_LOSS_PCT", 0.5)  # each way
LOSSY_CC = os.environ.get("FB_LOSSY_CC", "cubic")  # congestion control inside the namespaces
LOSSY_EMU = os.environ.get("FB_LOSSY_EMU", "auto")  # auto | netem | linkem
SCENARIOS = {s.strip() for s in os.environ.get("FB_SCENARIOS", "1,2,3,4,5,6,7,8,9,10").split(",") if s.strip()}
DUFS = os.environ.get("FB_DUFS") or shutil.which("dufs") or str(Path.home() / ".cargo/bin/dufs")
MINISERVE = os.environ.get("FB_MINISERVE") or shutil.which("miniserve") or str(Path.home() / ".cargo/bin/miniserve")
TMPFS = Path(os.environ.get("FB_TMPFS", "/dev/shm"))
TIMEOUT = env_float("FB_TIMEOUT", 120.0)  # any single client command
NGINX_WORKERS = os.environ.get("FB_NGINX_WORKERS", "auto")
CLUSTER_NODES = env_int("FB_CLUSTER_NODES", 3)  # scenario 10: the larger cluster (and the failover one)
KILL_AT = env_float("FB_KILL_AT", 0.25)  # scenario 10: fraction of the file received when its node is killed

MiB = 1 << 20
GiB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes
PROCS: list[subprocess.Popen] = []
NETNS: list[str] = []
# Stops for what runs outside PROCS (Garage, a local cluster: started by the
# deploy/ scripts, which record their own pids); run last first.
STOPPERS: list = []
CLEANUP_PATHS: list[Path] = []
FINAL_PATHS: list[Path] = []  # removed when the benchmark ends


def spawn(cmd, **kw) -> subprocess.Popen:
    """Starts a long-running helper (a server) in its own process group."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen([str(c) for c in cmd], start_new_session=True, **kw)
    PROCS.append(p)
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=3)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=3)


def cleanup() -> None:
    for fn in reversed(STOPPERS):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - keep cleaning up
            log(f"cleanup: {e}")
    STOPPERS.clear()
    for p in reversed(PROCS):
        try:
            stop(p)
        except Exception as e:  # noqa: BLE001 - keep cleaning up
            log(f"cleanup: {e}")
    PROCS.clear()
    for ns in NETNS:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, timeout=10)
    NETNS.clear()
    for p in CLEANUP_PATHS:
        shutil.rmtree(p, ignore_errors=True)


def final_cleanup() -> None:
    cleanup()
    for p in FINAL_PATHS:
        shutil.rmtree(p, ignore_errors=True)


atexit.register(final_cleanup)


def _on_signal(signum, _frame):
    log(f"signal {signum}: cleaning up")
    raise SystemExit(128 + signum)


for _s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_s, _on_signal)


@dataclass
class Run:
    elapsed: float
    rc: int
    cpu: float  # user + system seconds of the command and its children
    # The client's peak RSS in KiB, from GNU time's %M (0: not measured): the
    # largest member of the tree under `timeout`, so at least timeout's own
    # (~1.7 MiB).
    maxrss_kib: int = 0


def run_timed(cmd, *, stdout=subprocess.DEVNULL, timeout: float = TIMEOUT, prefix=(), expect=(0,)) -> Run:
    """Runs a client command under `timeout`, returning wall time, exit status and CPU."""
    p = start_client(cmd, stdout=stdout, timeout=timeout, prefix=prefix)
    return finish_client(p, expect)


# GNU time, for the clients' peak RSS. It runs outside `timeout`: the process
# Python starts inherits the driver's own RSS high-water mark when it execs
# (so wait4's ru_maxrss of it is at least the driver's ~40 MiB), while time
# reports only its child's tree (timeout, forked by the small time, and the
# client), and it outlives timeout's cut-off to report it. It writes into a
# pipe, so no file is created per run.
TIME_BIN = "/usr/bin/time"
HAVE_TIME = os.access(TIME_BIN, os.X_OK)


def start_client(cmd, *, stdout=subprocess.DEVNULL, timeout: float = TIMEOUT, prefix=(), stderr=None):
    """Starts a client command under `timeout` (and GNU time); its stderr goes
    to bench/out/logs/clients.err unless `stderr` (a file) is given."""
    full = ["timeout", "-k", "2", f"{timeout:g}", *map(str, cmd)]
    rss_r = rss_w = None
    if HAVE_TIME:
        rss_r, rss_w = os.pipe()
        os.set_blocking(rss_r, False)
        full = [TIME_BIN, "-f", "%M", "-o", f"/dev/fd/{rss_w}", *full]
    full = [*prefix, *full]
    err = open(LOGS / "clients.err", "ab") if stderr is None else None
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(full, stdout=stdout, stderr=err or stderr, stdin=subprocess.DEVNULL,
                             start_new_session=True, pass_fds=(rss_w,) if rss_w is not None else ())
    finally:
        if err:
            err.close()
        if rss_w is not None:
            os.close(rss_w)
    p._bench_t0 = t0  # type: ignore[attr-defined]
    p._bench_cmd = full  # type: ignore[attr-defined]
    p._bench_rss = rss_r  # type: ignore[attr-defined]
    p._bench_timeout = timeout  # type: ignore[attr-defined]
    return p


def _read_rss(fd: int | None) -> int:
    """GNU time's %M from the pipe (its last line; a line before it may say
    the command failed), in KiB; 0 if there is none."""
    if fd is None:
        return 0
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass  # a leftover process still holds the write end: take what is there
    finally:
        os.close(fd)
    lines = data.decode(errors="replace").split()
    return int(lines[-1]) if lines and lines[-1].isdigit() else 0


def finish_client(p, expect=(0,)) -> Run:
    # Python's own safety net, beyond `timeout`: never wait forever.
    guard = threading.Timer(max(TIMEOUT, p._bench_timeout) + 30, lambda: _kill_group(p.pid))
    guard.start()
    try:
        _, status, ru = os.wait4(p.pid, 0)
    finally:
        guard.cancel()
    elapsed = time.perf_counter() - p._bench_t0
    rc = os.waitstatus_to_exitcode(status)
    p.returncode = rc
    if rc not in expect:
        log(f"  exit {rc}: {' '.join(p._bench_cmd)} (see bench/out/logs/clients.err)")
    return Run(elapsed, rc, ru.ru_utime + ru.ru_stime, _read_rss(p._bench_rss))


def _kill_group(pid: int) -> None:
    """Kills the client's process group and those of its children: under GNU
    time, `timeout` (time's child) runs in a group of its own."""
    for pgid in [*children(pid), pid]:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(pid: int, port: int) -> bool:
    """Whether the network namespace of `pid` has a TCP listener on `port`."""
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_listening(p: subprocess.Popen, port: int, what: str, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if p.poll() is not None:
            raise RuntimeError(f"{what} exited with {p.returncode} before listening (logs in bench/out/logs)")
        if listening(p.pid, port):
            return
        time.sleep(0.01)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def proc_cpu(pids) -> float:
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # utime, stime, and cutime, cstime: children that exited and were
        # waited for (rsync's per-connection processes).
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def proc_status_kib(pids, key: str) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(f[1]) == pid:
                out.append(int(d))
    return out


# ---------------------------------------------------------------- page cache
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _mincore_fraction(path: Path, size: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return 0.0
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                return 0.0
            return 1.0 - bytes(vec).count(0) / pages
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def warm(paths) -> None:
    """Makes sure every file is wholly in the page cache (reads it if not)."""
    buf = bytearray(8 * MiB)
    for p in paths:
        if _mincore_fraction(p, p.stat().st_size) >= 0.999:
            continue
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


_libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.munlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class pinned:
    """Holds files' pages in the page cache while the block runs: a shared
    read-only mapping of each, mlock(2)ed (which reads in what is missing).
    On this VM a file's idle pages are reclaimed at ~1 % per 10 s with plenty
    of memory free, and each one missing is a synchronous read for the server
    in the middle of a run; warm() alone leaves the runs exposed to that.
    `self.ok` says whether every file was locked (else warm() is all there is)."""

    def __init__(self, paths):
        self.paths, self.maps, self.ok = list(paths), [], True

    def __enter__(self):
        for p in self.paths:
            size = p.stat().st_size
            fd = os.open(p, os.O_RDONLY)
            try:
                addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            finally:
                os.close(fd)
            if addr in (None, ctypes.c_void_p(-1).value):
                self.ok = False
                continue
            self.maps.append((addr, size))
            if _libc.mlock(addr, size) != 0:
                log(f"mlock of {p.name} failed: {os.strerror(ctypes.get_errno())}")
                self.ok = False
        return self

    def __exit__(self, *exc):
        for addr, size in self.maps:
            _libc.munlock(addr, size)
            _libc.munmap(addr, size)
        self.maps.clear()
        return False


def settle_writeback() -> None:
    """Keeps dirty pages from earlier runs out of the next run's time."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:") and int(line.split()[1]) > 256 * 1024:
            os.sync()
            return


def rm(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- data
def make_data() -> dict:
    """Creates the data under bench/data (random content, so nothing
    compresses or dedups). Names carry the sizes, so runs with other sizes
    (small development runs) do not throw the full-size data away."""
    DATA.mkdir(parents=True, exist_ok=True)
    files = {
        "big": DATA / f"big-{BIG_MIB}M.bin",
        "mid": DATA / f"mid-{MID_MIB}M.bin",
        "clients": [DATA / f"clients-{CLIENTS}x{CLIENT_MIB}M" / f"c{i:03d}.bin" for i in range(CLIENTS)],
        "tree": DATA / f"tree-{TREE_FILES}x{TREE_KIB}K",
    }

    def random_file(path: Path, size: int) -> None:
        if path.exists() and path.stat().st_size == size:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            left = size
            while left:
                n = min(left, 16 * MiB)
                f.write(os.urandom(n))
                left -= n
        tmp.rename(path)

    log("making data (only what is missing)")
    random_file(files["big"], BIG_MIB * MiB)
    random_file(files["mid"], MID_MIB * MiB)
    for p in files["clients"]:
        random_file(p, CLIENT_MIB * MiB)
    tree = files["tree"]
    done = tree.with_name(tree.name + ".complete")  # beside the tree, so the tools do not copy it
    if not done.exists():
        rm(tree)
        # A few subdirectories, two levels deep: d0..d3, each with s0, s1.
        leaves = [tree / f"d{a}" / f"s{b}" for a in range(4) for b in range(2)]
        for leaf in leaves:
            leaf.mkdir(parents=True)
        blob = os.urandom(TREE_FILES * TREE_KIB * 1024)
        for i in range(TREE_FILES):
            leaf = leaves[i % len(leaves)]
            (leaf / f"f{i:05d}.dat").write_bytes(blob[i * TREE_KIB * 1024 : (i + 1) * TREE_KIB * 1024])
        done.write_text("")
    files["tree_files"] = sorted(p for p in tree.rglob("*") if p.is_file())
    return files


def rel(p: Path) -> str:
    """A data file's path as the servers see it."""
    return p.relative_to(DATA).as_posix()


# ---------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    host: str
    port: int
    pids: list[int] = field(default_factory=list)
    tmp: Path | None = None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def cpu(self) -> float:
        return proc_cpu(self.all_pids())

    def all_pids(self) -> list[int]:
        """The server's processes: nginx's workers may be (re)started."""
        if self.name == "nginx":
            return [self.proc.pid] + children(self.proc.pid)
        return self.pids

    def stop(self) -> None:
        stop(self.proc)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def ns_prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


def logfile(name: str):
    return open(LOGS / f"{name}.log", "ab")


def start_ferry(root: Path | str, *, host="127.0.0.1", netns=None, extra=(), env_extra=None) -> Server:
    """`ferry serve ROOT` (a directory, or an `s3://` address as a string);
    `env_extra`: more environment (the store's AWS_* variables)."""
    env = {**os.environ, "RUST_LOG": os.environ.get("FB_RUST_LOG", "warn"), **(env_extra or {})}
    p = spawn(
        [*ns_prefix(netns), FERRY, "serve", root, "--port", "0", "--bind", host, *extra],
        stdout=subprocess.PIPE,
        stderr=logfile("ferry-serve"),
        env=env,
    )
    ready, _, _ = select.select([p.stdout], [], [], 10)
    line = p.stdout.readline().decode(errors="replace").strip() if ready else ""
    m = re.search(r" on (\S+?)(?: \(|$)", line)
    if not m:
        raise RuntimeError(f"ferry serve did not print its address (got {line!r})")
    port = int(m.group(1).rsplit(":", 1)[1])
    return Server("ferry", p, host, port, [p.pid])


def start_nginx(root: Path, *, host="127.0.0.1", netns=None, tls=None, dav_temp: Path | None = None) -> Server:
    """nginx serving `root`. With `dav_temp`, it also takes WebDAV PUTs into
    `root` (unlimited body size, missing directories created), buffering each
    body in a temporary under `dav_temp` (put it on the same file system as
    `root`, so the final rename does not copy)."""
    tmp = Path(tempfile.mkdtemp(prefix="nginx-", dir=OUT))
    CLEANUP_PATHS.append(tmp)
    port = free_port() if not netns else random.randint(20000, 40000)
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""# Minimal static file server for the benchmark (written by bench/bench.py).
user root;
worker_processes {NGINX_WORKERS};
worker_rlimit_nofile 65536;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    default_type application/octet-stream;
    server {{
        listen {host}:{port}{" ssl" if tls else ""} backlog=4096;
        {f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_session_cache shared:ferrybench:1m;" if tls else ""}
        root {root};
        location / {{ {f"dav_methods PUT; create_full_put_path on; client_max_body_size 0; client_body_temp_path {dav_temp};" if dav_temp else ""} }}
    }}
}}
"""
    )
    p = spawn(
        [*ns_prefix(netns), "nginx", "-c", conf, "-p", tmp, "-e", tmp / "error.log"],
        stdout=logfile("nginx"),
        stderr=subprocess.STDOUT,
    )
    wait_listening(p, port, "nginx")
    time.sleep(0.05)
    pids = [p.pid] + children(p.pid)
    return Server("nginx", p, host, port, pids, tmp)


def start_pyhttp(root: Path) -> Server:
    port = free_port()
    p = spawn(
        [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", root],
        stdout=logfile("pyhttp"),
        stderr=subprocess.STDOUT,
    )
    wait_listening(p, port, "python -m http.server")
    return Server("pyhttp", p, "127.0.0.1", port, [p.pid])


def start_dufs(root: Path, extra=()) -> Server:
    port = free_port()
    p = spawn([DUFS, root, "--bind", "127.0.0.1", "--port", port, *extra], stdout=logfile("dufs"),
              stderr=subprocess.STDOUT)
    wait_listening(p, port, "dufs")
    return Server("dufs", p, "127.0.0.1", port, [p.pid])


def start_miniserve(root: Path) -> Server:
    port = free_port()
    p = spawn([MINISERVE, root, "--interfaces", "127.0.0.1", "--port", port],
              stdout=logfile("miniserve"), stderr=subprocess.STDOUT)
    wait_listening(p, port, "miniserve")
    return Server("miniserve", p, "127.0.0.1", port, [p.pid])


def tool_version(cmd) -> str:
    try:
        out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
        return out.splitlines()[0] if out else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def start_rsyncd(root: Path) -> Server:
    tmp = Path(tempfile.mkdtemp(prefix="rsyncd-", dir=OUT))
    CLEANUP_PATHS.append(tmp)
    port = free_port()
    conf = tmp / "rsyncd.conf"
    conf.write_text(
        f"""port = {port}
address = 127.0.0.1
pid file = {tmp}/rsyncd.pid
log file = {tmp}/rsyncd.log
use chroot = no
[bench]
    path = {root}
    read only = yes
    uid = root
    gid = root
"""
    )
    p = spawn(["rsync", "--daemon", "--no-detach", f"--config={conf}"], stdout=logfile("rsyncd"), stderr=subprocess.STDOUT)
    wait_listening(p, port, "rsync --daemon")
    return Server("rsyncd", p, "127.0.0.1", port, [p.pid], tmp)


def start_iperf3() -> Server:
    port = free_port()
    p = spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", port], stdout=logfile("iperf3"), stderr=subprocess.STDOUT)
    wait_listening(p, port, "iperf3 -s")
    return Server("iperf3", p, "127.0.0.1", port, [p.pid])


# ---------------------------------------------------------------- results
@dataclass
class Cell:
    scen: str  # "1", "2", ...
    what: str  # scenario description, first row of a scenario only
    tool: str
    into: str
    unit: str  # "GB/s", "files/s", "MiB", "MB/s"
    group: str  # rows with the same group compare against the group's ferry row
    ref: bool = False  # the ferry row of its group
    values: list[float] = field(default_factory=list)
    failed: int = 0
    note: str = ""
    srv_cpu: float = 0.0
    srv_bytes: int = 0
    cli_cpu: float = 0.0
    cli_bytes: int = 0
    cli_rss_kib: int = 0  # the client's peak RSS, the largest of the cell's runs (0: not measured)
    extra: str = ""  # shown after the median (e.g. seconds)
    cpu_per: str = "GiB"  # CPU columns: seconds per GiB, or µs per "file" (then *_bytes count files)

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None


CELLS: list[Cell] = []
SKIPS: list[str] = []
NOTES: list[str] = []
AIMS: list[str] = []  # lines a scenario adds under "Aims" itself


def cell(*args, **kw) -> Cell:
    c = Cell(*args, **kw)
    CELLS.append(c)
    return c


def record(c: Cell, value: float | None, *, srv_cpu=0.0, srv_bytes=0, cli_cpu=0.0, cli_bytes=0, cli_rss=0,
           label="") -> None:
    """Adds one run's result; `cli_rss` is the client's peak RSS in KiB (0: not measured)."""
    if value is None:
        c.failed += 1
        log(f"  {c.tool} -> {c.into}: FAILED")
        return
    c.values.append(value)
    c.srv_cpu += srv_cpu
    c.srv_bytes += srv_bytes
    c.cli_cpu += cli_cpu
    c.cli_bytes += cli_bytes
    c.cli_rss_kib = max(c.cli_rss_kib, cli_rss)
    rss = f", client peak RSS {cli_rss / 1024:.1f} MiB" if cli_rss else ""
    log(f"  {c.tool} -> {c.into}: {fmt(value, c.unit)}{label}{rss}")


def fmt(v: float, unit: str) -> str:
    if unit in ("GB/s",):
        return f"{v:.2f} {unit}"
    if unit in ("MB/s",):
        return f"{v:.2f} {unit}" if v < 10 else f"{v:.1f} {unit}"
    if unit == "files/s":
        return f"{v:,.0f} {unit}"
    if unit == "MiB":
        return f"{v:.1f} {unit}"
    return f"{v:.3g} {unit}"


def rotated(items: list, r: int) -> list:
    """The round's order: rotate so no tool always runs first (after a sync, a
    server start...), alternating the tools within each round."""
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


# ---------------------------------------------------------------- scenario 1
def scenario1(files) -> None:
    big = files["big"]
    size = big.stat().st_size
    have_no_verify = b"--no-verify" in subprocess.run([FERRY, "get", "--help"], capture_output=True, timeout=10).stdout
    webroot = DATA
    disk = OUT / "s1"
    shm = TMPFS / f"ferry-bench-{os.getpid()}"
    CLEANUP_PATHS.append(shm)
    disk.mkdir(parents=True, exist_ok=True)
    shm.mkdir(parents=True, exist_ok=True)
    desc = f"1 file of {size // MiB} MiB, page cache warm, loopback"

    nginx = start_nginx(webroot)
    pyhttp = start_pyhttp(webroot)
    ferry = start_ferry(webroot)
    iperf = start_iperf3()
    # One download before timing, so the server's hash of the file is cached
    # (as it is for any file served more than once); the "hash not cached"
    # row measures the first download.
    run_timed([FERRY, "get", "-q", ferry.hostport, rel(big), "-o", "-"])

    dests = {"ext4 file": disk, "/dev/null": None, f"tmpfs ({TMPFS})": shm}
    runs = []  # (cell, function returning (value, srv_cpu, srv_bytes, cli_cpu, cli_rss_kib))

    def add(c: Cell, fn) -> None:
        runs.append((c, fn))

    first = True

    def mk(tool, into, group, ref=False, unit="GB/s"):
        nonlocal first
        c = cell("1", desc if first else "", tool, into, unit, group, ref)
        first = False
        return c

    def iperf_fn(zero: bool):
        def fn():
            cmd = ["iperf3", "-c", "127.0.0.1", "-p", iperf.port, "-n", size, "-J"] + (["-Z"] if zero else [])
            with tempfile.TemporaryFile() as out:
                r = run_timed(cmd, stdout=out)
                out.seek(0)
                try:
                    end = json.load(out)["end"]["sum_received"]
                    return end["bytes"] / end["seconds"] / 1e9, 0.0, 0, r.cpu, r.maxrss_kib
                except (ValueError, KeyError):
                    return None, 0, 0, 0, 0

        return fn

    add(mk("iperf3 (memory to memory: the link's limit)", "memory", "/dev/null"), iperf_fn(False))
    add(mk("iperf3 -Z (sendfile)", "memory", "/dev/null"), iperf_fn(True))

    def target(dest: Path | None, name: str) -> Path:
        return dest / name if dest else Path("/dev/null")

    def check(dest: Path | None, path: Path, r: Run) -> bool:
        if r.rc != 0:
            return False
        if dest is None:
            return True
        ok = path.exists() and path.stat().st_size == size
        rm(path)
        return ok

    def nc_fn(dest):
        def fn():
            port = free_port()
            with open(big, "rb") as src:
                srv = subprocess.Popen(
                    ["timeout", "60", "nc", "-N", "-l", "127.0.0.1", str(port)],
                    stdin=src,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            PROCS.append(srv)
            try:
                wait_listening(srv, port, "nc -l")
                out = target(dest, "big.nc")
                with open(out, "wb") as f:
                    r = run_timed(["nc", "127.0.0.1", port], stdout=f)
                srv.wait(timeout=10)
            finally:
                stop(srv)
            return (r, None) if check(dest, out, r) else (None, None)

        return lambda: _rate(fn, size, None)

    def curl_fn(server: Server, dest):
        def fn():
            out = target(dest, "big.curl")
            r = run_timed(["curl", "-sSf", "-o", out, f"http://{server.hostport}/{rel(big)}"])
            return (r, None) if check(dest, out, r) else (None, None)

        return lambda: _rate(fn, size, server)

    def ferry_fn(dest, extra=(), fresh_server=False):
        def fn():
            # `--prehash off`: a file the server has never hashed (by
            # default a fresh server starts hashing its tree ahead of demand).
            srv = start_ferry(webroot, extra=("--prehash", "off")) if fresh_server else ferry
            try:
                if dest is None:
                    with open("/dev/null", "wb") as devnull:
                        r = run_timed([FERRY, "get", "-q", *extra, srv.hostport, rel(big), "-o", "-"], stdout=devnull)
                    out = None
                else:
                    out = dest / big.name
                    r = run_timed([FERRY, "get", "-q", *extra, srv.hostport, rel(big), "-o", dest])
                if not check(dest, out, r):
                    return None, None
                return r, (srv.cpu() if fresh_server else None)  # a fresh server: all it did, hash + send
            finally:
                if fresh_server:
                    srv.stop()

        return lambda: _rate(fn, size, None if fresh_server else ferry)

    for into, dest in dests.items():
        add(mk("nc (netcat-openbsd)", into, into), nc_fn(dest))
        add(mk("nginx + curl", into, into), curl_fn(nginx, dest))
        add(mk("python3 -m http.server + curl", into, into), curl_fn(pyhttp, dest))
        if dest is None:
            add(mk("ferry get -o - > /dev/null", into, into, ref=True), ferry_fn(None))
        else:
            add(mk("ferry get -q", into, into, ref=True), ferry_fn(dest))
    if have_no_verify:
        add(mk("ferry get -q --no-verify", "ext4 file", "ext4 file"), ferry_fn(disk, ["--no-verify"]))
    add(mk("ferry get -q, server hash not cached (first download)", "ext4 file", "ext4 file"), ferry_fn(disk, fresh_server=True))

    for r in range(N):
        log(f"scenario 1, round {r + 1}/{N}")
        for c, fn in rotated(runs, r):
            warm([big])
            settle_writeback()
            value, srv_cpu, srv_bytes, cli_cpu, cli_rss = fn()
            record(c, value, srv_cpu=srv_cpu, srv_bytes=srv_bytes, cli_cpu=cli_cpu, cli_bytes=size if value else 0,
                   cli_rss=cli_rss)
    for s in (nginx, pyhttp, ferry, iperf):
        s.stop()
    rm(shm)


def _rate(fn, size: int, server: Server | None):
    """Runs one transfer; `fn` returns (the client's Run or None if it failed,
    the server CPU it measured itself or None). Returns (GB/s, server CPU s,
    bytes, client CPU s, client peak RSS KiB)."""
    before = server.cpu() if server else 0.0
    r, own_srv = fn()
    if r is None:
        return None, 0, 0, 0, 0
    if own_srv is not None:  # the function measured its own server
        return size / r.elapsed / 1e9, own_srv, size, r.cpu, r.maxrss_kib
    srv = (server.cpu() - before) if server else 0.0
    return size / r.elapsed / 1e9, srv, (size if server else 0), r.cpu, r.maxrss_kib


# ---------------------------------------------------------------- scenario 2
def scenario2(files) -> None:
    tree = files["tree"]
    tree_files = files["tree_files"]
    nfiles = len(tree_files)
    have_no_verify = b"--no-verify" in subprocess.run([FERRY, "get", "--help"], capture_output=True, timeout=10).stdout
    out = OUT / "s2"
    rm(out)
    out.mkdir(parents=True)
    # Every run writes into a directory of its own, and all of them are
    # deleted only when the benchmark ends: this ext4 may run without a
    # journal, and then creating a file scans past every inode deleted in
    # the last minute or more (ext4 `recently_deleted`), so deleting one
    # run's 2,000 files would slow the next run's creates several-fold.
    FINAL_PATHS.append(out)
    desc = f"tree: {nfiles} files of {TREE_KIB} KiB in 8 subdirs"

    nginx = start_nginx(DATA)
    rsyncd = start_rsyncd(tree)
    ferry = start_ferry(DATA)

    def verify_tree(root: Path) -> bool:
        got = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith((".part", ".meta")))
        if got != nfiles:
            log(f"  expected {nfiles} files under {root}, found {got}")
        return got == nfiles

    def curl_cmd(root: Path) -> list:
        kfile = out / f"{root.name}.curl"
        kfile.write_text("".join(
            f'url = "http://{nginx.hostport}/{rel(p)}"\noutput = "{root / rel(p)}"\n' for p in tree_files))
        return ["curl", "-sSf", "--create-dirs", "-K", kfile]

    runs = []
    first = True

    def add(tool, server: Server, make_cmd, ref=False):
        nonlocal first
        c = cell("2", desc if first else "", tool, "ext4 dir", "files/s", "tree", ref, cpu_per="file")
        first = False
        runs.append((c, server, make_cmd))

    add("nginx + curl, one keep-alive connection (-K list)", nginx, curl_cmd)
    add("rsync daemon, rsync -a", rsyncd, lambda root: ["rsync", "-a", f"rsync://{rsyncd.hostport}/bench/", root])
    add("ferry get -r", ferry, lambda root: [FERRY, "get", "-q", "-r", ferry.hostport, rel(tree), "-o", root], ref=True)
    if have_no_verify:
        add("ferry get -r --no-verify", ferry,
            lambda root: [FERRY, "get", "-q", "-r", "--no-verify", ferry.hostport, rel(tree), "-o", root])
    # One untimed round first: it takes the hit of inodes freed shortly before
    # (an earlier run's clean-up) and warms every server.
    for i, (_, _, make_cmd) in enumerate(runs):
        run_timed(make_cmd(out / f"t{i}warmup"))
    for r in range(N):
        log(f"scenario 2, round {r + 1}/{N}")
        for i, (c, server, make_cmd) in rotated(list(enumerate(runs)), r):
            root = out / f"t{i}r{r}"
            cmd = make_cmd(root)
            warm(tree_files)
            settle_writeback()
            before = server.cpu()
            run = run_timed(cmd)
            srv = server.cpu() - before
            if run.rc == 0 and verify_tree(root):
                value = nfiles / run.elapsed
                record(c, value, srv_cpu=srv, srv_bytes=nfiles, cli_cpu=run.cpu, cli_bytes=nfiles,
                       cli_rss=run.maxrss_kib, label=f" ({run.elapsed:.2f} s)")
            else:
                record(c, None)
    for c, _, _ in runs:
        m = c.median()
        if m:
            c.extra = f"{nfiles / m:.2f} s"
    for s in (nginx, rsyncd, ferry):
        s.stop()


# ---------------------------------------------------------------- scenario 3
def scenario3(files) -> None:
    cfiles = files["clients"]
    size = CLIENT_MIB * MiB
    total = size * len(cfiles)
    out = OUT / "s3"
    rm(out)
    out.mkdir(parents=True)
    desc = f"{len(cfiles)} clients at once, {CLIENT_MIB} MiB each (distinct files), aggregate"
    nginx = start_nginx(DATA)
    ferry = start_ferry(DATA)
    run_timed([FERRY, "get", "-q", ferry.hostport, *[rel(p) for p in cfiles], "-o", out / "warmup"])
    rm(out / "warmup")

    def crowd(server: Server, make_cmd, tool: str):
        def fn():
            dirs = [out / tool / str(i) for i in range(len(cfiles))]
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            before = server.cpu()
            t0 = time.perf_counter()
            procs = [start_client(make_cmd(p, d)) for p, d in zip(cfiles, dirs)]
            runs = [finish_client(p) for p in procs]
            elapsed = time.perf_counter() - t0
            srv = server.cpu() - before
            ok = all(r.rc == 0 for r in runs) and all(
                (d / p.name).exists() and (d / p.name).stat().st_size == size for p, d in zip(cfiles, dirs)
            )
            rm(out / tool)
            if not ok:
                return None, 0, 0, 0, 0
            return total / elapsed / 1e9, srv, total, sum(r.cpu for r in runs), max(r.maxrss_kib for r in runs)

        return fn

    c_nginx = cell("3", desc, f"nginx + {len(cfiles)} curl", "ext4 files", "GB/s", "crowd")
    c_ferry = cell("3", "", f"ferry serve + {len(cfiles)} ferry get -q", "ext4 files", "GB/s", "crowd", True)
    runs = [
        (c_nginx, crowd(nginx, lambda p, d: ["curl", "-sSf", "-o", d / p.name, f"http://{nginx.hostport}/{rel(p)}"], "curl")),
        (c_ferry, crowd(ferry, lambda p, d: [FERRY, "get", "-q", ferry.hostport, rel(p), "-o", d], "ferry")),
    ]
    for r in range(N):
        log(f"scenario 3, round {r + 1}/{N}")
        for c, fn in rotated(runs, r):
            warm(cfiles)
            settle_writeback()
            value, srv_cpu, srv_bytes, cli_cpu, cli_rss = fn()
            record(c, value, srv_cpu=srv_cpu, srv_bytes=srv_bytes, cli_cpu=cli_cpu, cli_bytes=total if value else 0,
                   cli_rss=cli_rss)
    nginx.stop()
    ferry.stop()


# ---------------------------------------------------------------- scenario 4
def open_idle(host: str, port: int, count: int) -> list[socket.socket]:
    """Opens `count` connections: half send nothing, half a partial header
    (ferry: 3 of the 8 magic bytes; HTTP: an unfinished request line)."""
    socks = []
    for i in range(count):
        s = socket.create_connection((host, port), timeout=5)
        if i % 2:
            s.sendall(PARTIAL[port])
        socks.append(s)
    return socks


PARTIAL: dict[int, bytes] = {}


def still_open(socks) -> int:
    """How many idle connections the server has not closed."""
    # Readable means the server closed it (EOF or reset) or answered with an
    # error frame before closing: either way it no longer waits.
    closed = 0
    for s in socks:
        r, _, _ = select.select([s], [], [], 0)
        closed += bool(r)
    return len(socks) - closed


def scenario4(files) -> None:
    mid = files["mid"]
    size = mid.stat().st_size
    total = size * IDLE_DL
    out = OUT / "s4"
    rm(out)
    out.mkdir(parents=True)
    desc = f"{IDLE} idle connections + {IDLE_DL} downloads of {size // MiB} MiB at once"

    def one(tool: str):
        if tool == "ferry":
            server = start_ferry(DATA, extra=["--idle-timeout", "120"])
            PARTIAL[server.port] = b"\x89FE"
            cmd = lambda d: [FERRY, "get", "-q", server.hostport, rel(mid), "-o", d]  # noqa: E731
            pids = server.all_pids
        else:
            server = start_nginx(DATA)
            PARTIAL[server.port] = f"GET /{rel(mid)} HT".encode()
            cmd = lambda d: ["curl", "-sSf", "-o", d / mid.name, f"http://{server.hostport}/{rel(mid)}"]  # noqa: E731
            pids = server.all_pids
        try:
            warm([mid])
            # One download first, so the server's hash of mid.bin is cached as
            # in the other scenarios (and nginx has opened it once too).
            if tool == "ferry":
                run_timed([FERRY, "get", "-q", server.hostport, rel(mid), "-o", "-"])
            else:
                run_timed(["curl", "-sSf", "-o", "/dev/null", f"http://{server.hostport}/{rel(mid)}"])
            time.sleep(0.1)
            rss0 = proc_status_kib(pids(), "VmRSS") / 1024
            socks = open_idle(server.host, server.port, IDLE)
            # Let the server accept and park all of them.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                nfd = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids() if Path(f"/proc/{p}").exists())
                if nfd >= IDLE:
                    break
                time.sleep(0.02)
            time.sleep(0.2)
            rss_idle = proc_status_kib(pids(), "VmRSS") / 1024
            dirs = [out / tool / str(i) for i in range(IDLE_DL)]
            for d in dirs:
                d.mkdir(parents=True, exist_ok=True)
            warm([mid])
            peak = [rss_idle]
            done = threading.Event()

            def sample():
                while not done.wait(0.02):
                    peak[0] = max(peak[0], proc_status_kib(pids(), "VmRSS") / 1024)

            sampler = threading.Thread(target=sample)
            sampler.start()
            t0 = time.perf_counter()
            procs = [start_client(cmd(d)) for d in dirs]
            runs = [finish_client(p) for p in procs]
            elapsed = time.perf_counter() - t0
            done.set()
            sampler.join()
            hwm = proc_status_kib(pids(), "VmHWM") / 1024
            kept = still_open(socks)
            for s in socks:
                s.close()
            ok = all(r.rc == 0 for r in runs) and all((d / mid.name).exists() and (d / mid.name).stat().st_size == size for d in dirs)
            rm(out / tool)
            return {
                "rss0": rss0,
                "idle": rss_idle,
                "peak": max(peak[0], hwm),
                "rate": total / elapsed / 1e9 if ok else None,
                "kept": kept,
                "cli_rss": max(r.maxrss_kib for r in runs),
            }
        finally:
            server.stop()

    rows = {}
    for tool, label in (("nginx", "nginx (+ curl)"), ("ferry", "ferry serve (+ ferry get -q)")):
        ref = tool == "ferry"
        rows[tool] = {
            "rss0": cell("4", desc if tool == "nginx" else "", f"{label}: server RSS after one download, no connections", "-", "MiB", "rss0", ref),
            "idle": cell("4", "", f"{label}: server RSS with {IDLE} idle", "-", "MiB", "idle", ref),
            "peak": cell("4", "", f"{label}: server peak RSS during the downloads", "-", "MiB", "peak", ref),
            "rate": cell("4", "", f"{label}: {IDLE_DL} downloads' aggregate", "ext4 files", "GB/s", "rate4", ref),
        }
    kept_min = {}
    for r in range(N):
        log(f"scenario 4, round {r + 1}/{N}")
        for tool in rotated(["nginx", "ferry"], r):
            res = one(tool)
            for k in ("rss0", "idle", "peak"):
                record(rows[tool][k], res[k])
            record(rows[tool]["rate"], res["rate"], cli_rss=res["cli_rss"])
            kept_min[tool] = min(kept_min.get(tool, IDLE), res["kept"])
    for tool, k in kept_min.items():
        rows[tool]["idle"].extra = f"{k}/{IDLE} idle kept open"
    if any(k < IDLE for k in kept_min.values()):
        NOTES.append("scenario 4: some idle connections were closed by the server during the run: "
                     + ", ".join(f"{t} kept {k}/{IDLE} (worst run)" for t, k in kept_min.items()))
    NOTES.append("scenario 4: nginx RSS is the sum over its master and worker processes (shared pages counted "
                 "in each); ferry is one process.")


# ---------------------------------------------------------------- scenario 5
# aria2c, as scenarios 5 and 9 run it: one file under the name given (-d DIR
# -o NAME), replacing one that is there, no preallocation (the default,
# prealloc, reserves the file's whole space before the first byte); quiet.
# Its control file NAME.aria2 is removed when a download completes.
ARIA2_OPTS = ["--allow-overwrite=true", "--auto-file-renaming=false", "--file-allocation=none", "-q"]
SRV_NS = "ferrybench-srv"
CLI_NS = "ferrybench-cli"
SRV_IP = "10.199.0.1"
CLI_IP = "10.199.0.2"


def sh(*cmd, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def make_lossy_link() -> str:
    """Two namespaces joined by a link with LOSSY_DELAY_MS each way and
    LOSSY_LOSS_PCT loss each way. Returns a description, or raises."""
    for ns in (SRV_NS, CLI_NS):
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, timeout=10)
    for ns in (SRV_NS, CLI_NS):
        sh("ip", "netns", "add", ns)
        NETNS.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    emu = None
    if LOSSY_EMU in ("auto", "netem"):
        sh("ip", "link", "add", "fbv-srv", "netns", SRV_NS, "type", "veth", "peer", "name", "fbv-cli", "netns", CLI_NS)
        sh("ip", "-n", SRV_NS, "addr", "add", f"{SRV_IP}/24", "dev", "fbv-srv")
        sh("ip", "-n", CLI_NS, "addr", "add", f"{CLI_IP}/24", "dev", "fbv-cli")
        sh("ip", "-n", SRV_NS, "link", "set", "fbv-srv", "up")
        sh("ip", "-n", CLI_NS, "link", "set", "fbv-cli", "up")
        errs = []
        for ns, dev in ((SRV_NS, "fbv-srv"), (CLI_NS, "fbv-cli")):
            r = sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "netem",
                   "delay", f"{LOSSY_DELAY_MS:g}ms", "loss", f"{LOSSY_LOSS_PCT:g}%", check=False)
            if r.returncode != 0:
                errs.append(r.stderr.strip())
        if not errs:
            emu = "veth pair + tc netem on both ends"
        elif LOSSY_EMU == "netem":
            raise RuntimeError(f"tc netem failed: {errs[0]}")
        else:
            sh("ip", "-n", SRV_NS, "link", "del", "fbv-srv", check=False)
            NOTES.append(f"scenario 5: `tc qdisc ... netem` failed ({errs[0]!r}: this kernel has no sch_netem), "
                         "so bench/linkem.py emulated the link: a userspace forwarder between two TUN devices, one "
                         "in each namespace, with the same delay and loss each way.")
    if emu is None:
        p = spawn([PY, BENCH / "linkem.py", "fbt-srv", "fbt-cli", f"{LOSSY_DELAY_MS:g}", f"{LOSSY_LOSS_PCT:g}", "3600"],
                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logfile("linkem"))
        ready, _, _ = select.select([p.stdout], [], [], 10)
        if not ready or p.stdout.readline().strip() != b"ready":
            raise RuntimeError("bench/linkem.py did not start (is /dev/net/tun there?)")
        sh("ip", "link", "set", "fbt-srv", "netns", SRV_NS)
        sh("ip", "link", "set", "fbt-cli", "netns", CLI_NS)
        sh("ip", "-n", SRV_NS, "addr", "add", SRV_IP, "peer", CLI_IP, "dev", "fbt-srv")
        sh("ip", "-n", CLI_NS, "addr", "add", CLI_IP, "peer", SRV_IP, "dev", "fbt-cli")
        sh("ip", "-n", SRV_NS, "link", "set", "fbt-srv", "up")
        sh("ip", "-n", CLI_NS, "link", "set", "fbt-cli", "up")
        emu = "userspace TUN forwarder (bench/linkem.py)"
    cc_used = []
    for ns in (SRV_NS, CLI_NS):
        if LOSSY_CC:
            r = sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={LOSSY_CC}", check=False)
            if r.returncode != 0 and LOSSY_CC != "reno":
                # A namespace may only pick an algorithm from
                # net.ipv4.tcp_allowed_congestion_control; reno always is.
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_congestion_control=reno", check=False)
        cc_used.append(sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv4.tcp_congestion_control").stdout.strip())
    cc = cc_used[0]
    if LOSSY_CC and cc != LOSSY_CC:
        NOTES.append(f"scenario 5: congestion control {LOSSY_CC} is not allowed inside a new namespace here "
                     f"(net.ipv4.tcp_allowed_congestion_control), so the namespaces use {cc}.")
    return f"{emu}, congestion control {cc}"


def rtt_ms(client_ns: str, host: str, port: int) -> float:
    """Median TCP connect time from `client_ns` to host:port (= one RTT)."""
    code = (
        "import socket,time,statistics\n"
        "t=[]\n"
        "for _ in range(5):\n"
        f"    a=time.perf_counter(); s=socket.create_connection(('{host}',{port}),timeout=5); t.append(time.perf_counter()-a); s.close()\n"
        "print(statistics.median(t)*1000)\n"
    )
    r = subprocess.run(["ip", "netns", "exec", client_ns, PY, "-c", code], capture_output=True, text=True, timeout=60)
    try:
        return float(r.stdout.strip())
    except ValueError:
        return float("nan")


def rx_bytes(pid: int) -> int:
    """Bytes received on the non-loopback interfaces of `pid`'s namespace."""
    total = 0
    for line in Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]:
        name, rest = line.split(":", 1)
        if name.strip() != "lo":
            total += int(rest.split()[0])
    return total


def scenario5(files) -> None:
    mid = files["mid"]
    size = mid.stat().st_size
    try:
        link = make_lossy_link()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        SKIPS.append(f"scenario 5 (lossy link) skipped: {e}")
        log(SKIPS[-1])
        return
    out = OUT / "s5"
    rm(out)
    out.mkdir(parents=True)
    nginx = start_nginx(DATA, host=SRV_IP, netns=SRV_NS)
    ferry = start_ferry(DATA, host=SRV_IP, netns=SRV_NS)
    # A process parked in the client namespace, to read its counters from.
    watch = spawn(["ip", "netns", "exec", CLI_NS, "sleep", "3600"])
    time.sleep(0.1)
    rtt = rtt_ms(CLI_NS, SRV_IP, ferry.port)
    # Warm the server's hash cache over loopback inside its namespace.
    run_timed([FERRY, "get", "-q", ferry.hostport, rel(mid), "-o", "-"], prefix=ns_prefix(SRV_NS))
    desc = (f"{size // MiB} MiB over {2 * LOSSY_DELAY_MS:g} ms RTT (measured {rtt:.0f} ms), {LOSSY_LOSS_PCT:g}% loss "
            f"each way; {link}; each run cut at {LOSSY_SECS:g} s")
    pre = ns_prefix(CLI_NS)

    def fn_for(cmd, target: Path):
        def fn():
            rm(target)
            target.mkdir(parents=True)
            b0 = rx_bytes(watch.pid)
            r = run_timed(cmd(target), timeout=LOSSY_SECS, prefix=pre, expect=(0, 124))
            got = rx_bytes(watch.pid) - b0
            rm(target)
            if r.rc not in (0, 124):
                return None, r
            return got / min(r.elapsed, LOSSY_SECS) / 1e6, r

        return fn

    c_curl = cell("5", desc, "nginx + curl (one connection)", "ext4 file", "MB/s", "lossy")
    c_ferry = cell("5", "", "ferry get -q (one connection)", "ext4 file", "MB/s", "lossy", True)
    c_j8 = cell("5", "", "ferry get -q -j 8", "ext4 file", "MB/s", "lossy")
    runs = [
        (c_curl, fn_for(lambda d: ["curl", "-sSf", "-o", d / mid.name, f"http://{nginx.hostport}/{rel(mid)}"], out / "curl")),
        (c_ferry, fn_for(lambda d: [FERRY, "get", "-q", ferry.hostport, rel(mid), "-o", d], out / "ferry")),
        (c_j8, fn_for(lambda d: [FERRY, "get", "-q", "-j", "8", ferry.hostport, rel(mid), "-o", d], out / "ferry8")),
        # The same eight ranges from the same nginx as aria2c below: the
        # clients compared with the server held equal.
        (cell("5", "", "nginx + ferry get -q -j 8 http://", "ext4 file", "MB/s", "lossy"),
         fn_for(lambda d: [FERRY, "get", "-q", "-j", "8", f"http://{nginx.hostport}/{rel(mid)}", "-o", d],
                out / "ferry8http")),
    ]
    if shutil.which("aria2c"):
        # Eight ranges of the same nginx, next to ferry's -j 8. -k 1M: aria2's
        # default --min-split-size (20M) would split 100 MiB into only 5
        # ranges, and a file under 40 MiB not at all.
        c_aria = cell("5", "", "nginx + aria2c -x 8 -s 8 -k 1M", "ext4 file", "MB/s", "lossy")
        runs.append((c_aria, fn_for(lambda d: ["aria2c", *ARIA2_OPTS, "-x", "8", "-s", "8", "-k", "1M", "-d", d,
                                               "-o", mid.name, f"http://{nginx.hostport}/{rel(mid)}"], out / "aria2")))
    else:
        SKIPS.append("scenario 5: aria2c not installed (bench/run.sh installs Debian's aria2), so no aria2c -x 8 row")
    finished = {c.tool: 0 for c, _ in runs}
    for r in range(LOSSY_N):
        log(f"scenario 5, round {r + 1}/{LOSSY_N}")
        for c, fn in rotated(runs, r):
            warm([mid])
            value, run = fn()
            if value is not None and run.rc == 0:
                finished[c.tool] += 1
            record(c, value, cli_rss=run.maxrss_kib, label=" (finished)" if run.rc == 0 else " (cut off)")
    for c, _ in runs:
        c.extra = f"{finished[c.tool]}/{len(c.values) + c.failed} finished"
    NOTES.append("scenario 5: MB/s = bytes received on the client's interface (TCP payload + headers) per second, "
                 f"over the whole download or the first {LOSSY_SECS:g} s.")
    nginx.stop()
    ferry.stop()
    stop(watch)


# ---------------------------------------------------------------- scenario 6
def scenario6(files) -> None:
    """HTTP, curl as the client of every server: ferry's HTTP front-end
    against nginx (sendfile on), dufs and miniserve."""
    big = files["big"]
    size = big.stat().st_size
    tree_files = files["tree_files"]
    nfiles = len(tree_files)
    out = OUT / "s6"
    rm(out)
    out.mkdir(parents=True)
    servers = [start_nginx(DATA), start_ferry(DATA)]
    for name, start, binary in (("dufs", start_dufs, DUFS), ("miniserve", start_miniserve, MINISERVE)):
        if Path(binary).exists():
            servers.append(start(DATA))
            NOTES.append(f"scenario 6: {tool_version([binary])}")
        else:
            SKIPS.append(f"scenario 6: {name} not installed (bench/run.sh installs it with cargo install --locked)")
    label = {"nginx": "nginx (sendfile on) + curl", "ferry": "ferry serve (HTTP) + curl",
             "dufs": "dufs + curl", "miniserve": "miniserve + curl"}
    desc_big = f"HTTP, curl as the client: 1 file of {size // MiB} MiB, page cache warm"
    desc_tree = f"HTTP, curl as the client: {nfiles} files of {TREE_KIB} KiB over one keep-alive connection"
    big_cells, tree_cells = {}, {}
    for i, srv in enumerate(servers):
        big_cells[srv.name] = cell("6", desc_big if i == 0 else "", label[srv.name], "/dev/null", "GB/s",
                                   "http-big", srv.name == "ferry")
    for i, srv in enumerate(servers):
        tree_cells[srv.name] = cell("6", desc_tree if i == 0 else "", label[srv.name], "/dev/null", "files/s",
                                    "http-tree", srv.name == "ferry", cpu_per="file")
    def kfile(srv: Server, which) -> Path:
        k = out / f"{srv.name}-{len(which)}.curl"
        k.write_text("".join(f'url = "http://{srv.hostport}/{rel(p)}"\noutput = "/dev/null"\n' for p in which))
        return k

    # A server slower than SLOW files/s over keep-alive gets the first
    # SLOW_FILES of the tree per run instead of all of it (its rate is
    # still files per second), so that the scenario ends in minutes.
    slow, slow_files = 500, min(300, nfiles)
    kfiles, counts = {}, {}
    for srv in servers:
        probe = run_timed(["curl", "-sSf", "-K", kfile(srv, tree_files[:100])])
        rate = 100 / probe.elapsed if probe.rc == 0 else 0
        which = tree_files if rate >= slow else tree_files[:slow_files]
        if len(which) < nfiles:
            tree_cells[srv.name].note = (f"{len(which)} of the {nfiles} files per run: {rate:.0f} files/s in a "
                                         f"100-file probe")
        kfiles[srv.name], counts[srv.name] = kfile(srv, which), len(which)

    def one_big(srv: Server) -> None:
        warm([big])
        before = srv.cpu()
        with tempfile.TemporaryFile() as meta:
            r = run_timed(["curl", "-sSf", "-o", "/dev/null", "-w", "%{size_download}",
                           f"http://{srv.hostport}/{rel(big)}"], stdout=meta)
            meta.seek(0)
            got = meta.read().decode(errors="replace").strip()
        srv_cpu = srv.cpu() - before
        if r.rc == 0 and got == str(size):
            record(big_cells[srv.name], size / r.elapsed / 1e9, srv_cpu=srv_cpu, srv_bytes=size, cli_cpu=r.cpu,
                   cli_bytes=size, cli_rss=r.maxrss_kib, label=f" ({r.elapsed:.2f} s)")
        else:
            record(big_cells[srv.name], None)

    def one_tree(srv: Server) -> None:
        warm(tree_files)
        before = srv.cpu()
        with tempfile.TemporaryFile() as meta:
            r = run_timed(["curl", "-sSf", "-w", "%{size_download}\n", "-K", kfiles[srv.name]], stdout=meta)
            meta.seek(0)
            sizes = meta.read().decode(errors="replace").split()
        srv_cpu = srv.cpu() - before
        want = counts[srv.name]
        ok = r.rc == 0 and len(sizes) == want and all(x == str(TREE_KIB * 1024) for x in sizes)
        if ok:
            record(tree_cells[srv.name], want / r.elapsed, srv_cpu=srv_cpu, srv_bytes=nfiles, cli_cpu=r.cpu,
                   cli_bytes=nfiles, cli_rss=r.maxrss_kib, label=f" ({r.elapsed:.2f} s)")
        else:
            log(f"  {srv.name}: {len(sizes)} responses, rc {r.rc}")
            record(tree_cells[srv.name], None)

    # Untimed: warms every server (and has ferry hash the big file once, as
    # for any file served more than once).
    for srv in servers:
        run_timed(["curl", "-sSf", "-o", "/dev/null", f"http://{srv.hostport}/{rel(big)}"])
        if counts[srv.name] == nfiles:
            run_timed(["curl", "-sSf", "-K", kfiles[srv.name]])
    for r in range(N):
        log(f"scenario 6, round {r + 1}/{N}")
        for srv in rotated(servers, r):
            one_big(srv)
        for srv in rotated(servers, r):
            one_tree(srv)
    for name, c in tree_cells.items():
        m = c.median()
        if m:
            c.extra = f"{counts[name] / m:.2f} s"
    for srv in servers:
        srv.stop()


def scenario7(files) -> None:
    """TLS: the same certificate (ECDSA P-256, self-signed, made by openssl)
    for nginx and ferry; curl as the client of both; and ferry's own client
    over TLS against plaintext, same server, same run."""
    big = files["big"]
    size = big.stat().st_size
    out = OUT / "s7"
    rm(out)
    out.mkdir(parents=True)
    cert, key = out / "cert.pem", out / "key.pem"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=ferry bench",
       "-addext", "subjectAltName=IP:127.0.0.1")
    nginx = start_nginx(DATA, tls=(cert, key))
    ferry = start_ferry(DATA, extra=("--tls-cert", str(cert), "--tls-key", str(key), "--allow-plaintext"))
    fp = "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.read_text())).hexdigest()
    NOTES.append("scenario 7: " + subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
                 + " (nginx's TLS); ferry: rustls with ring; no kernel TLS on either side")
    desc = f"TLS: 1 file of {size // MiB} MiB, page cache warm, same certificate"
    c_ngx = cell("7", desc, "nginx (TLS) + curl", "/dev/null", "GB/s", "tls-curl", False)
    c_fer = cell("7", "", "ferry serve --tls + curl", "/dev/null", "GB/s", "tls-curl", True)
    c_get = cell("7", "", "ferry get --tls -o - > /dev/null", "/dev/null", "GB/s", "tls-get", True)
    c_plain = cell("7", "", "ferry get (plaintext) -o - > /dev/null", "/dev/null", "GB/s", "tls-get", False)

    def url(srv: Server) -> str:
        return f"https://{srv.hostport}/{rel(big)}"

    def by_curl(srv: Server, c: Cell) -> None:
        warm([big])
        before = srv.cpu()
        with tempfile.TemporaryFile() as meta:
            r = run_timed(["curl", "-sSf", "--cacert", cert, "-o", "/dev/null", "-w", "%{size_download}", url(srv)],
                          stdout=meta)
            meta.seek(0)
            got = meta.read().decode(errors="replace").strip()
        srv_cpu = srv.cpu() - before
        if r.rc == 0 and got == str(size):
            record(c, size / r.elapsed / 1e9, srv_cpu=srv_cpu, srv_bytes=size, cli_cpu=r.cpu, cli_bytes=size,
                   cli_rss=r.maxrss_kib)
        else:
            record(c, None)

    def by_ferry(c: Cell, tls: bool) -> None:
        # --pin: trust exactly this certificate; no known_hosts is written.
        warm([big])
        before = ferry.cpu()
        extra = ["--pin", fp] if tls else []
        with open(os.devnull, "wb") as devnull:
            r = run_timed([FERRY, "get", "-q", *extra, ferry.hostport, rel(big), "-o", "-"], stdout=devnull)
        srv_cpu = ferry.cpu() - before
        record(c, size / r.elapsed / 1e9 if r.rc == 0 else None, srv_cpu=srv_cpu, srv_bytes=size, cli_cpu=r.cpu,
               cli_bytes=size, cli_rss=r.maxrss_kib)

    # Untimed: ferry hashes the file once, both servers warm up.
    for srv in (nginx, ferry):
        run_timed(["curl", "-sSf", "--cacert", cert, "-o", "/dev/null", url(srv)])
    for r in range(N):
        log(f"scenario 7, round {r + 1}/{N}")
        for srv, c in rotated([(nginx, c_ngx), (ferry, c_fer)], r):
            by_curl(srv, c)
        for c, tls in rotated([(c_get, True), (c_plain, False)], r):
            by_ferry(c, tls)
    nginx.stop()
    ferry.stop()


# ---------------------------------------------------------------- scenario 8
def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes: the size, then every byte."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        ba, bb = bytearray(8 * MiB), bytearray(8 * MiB)
        with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
            while True:
                na, nb = _fill(fa, ba), _fill(fb, bb)
                if na != nb:
                    return False
                if na == len(ba):
                    if ba != bb:  # memcmp, no copies
                        return False
                    continue
                return ba[:na] == bb[:nb]  # the tail (or nothing) and EOF
    except OSError:
        return False


def _fill(f, buf: bytearray) -> int:
    """Reads into `buf` until it is full or the file ends; the bytes read."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def reset_peak_rss(pids) -> bool:
    """Resets VmHWM of each process (clear_refs 5); whether it worked."""
    ok = True
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def scenario8(files) -> None:
    """Uploads: the big file, from the page cache, into a directory on tmpfs:
    ferry put, and curl -T (HTTP PUT) to ferry's HTTP front-end, nginx's
    WebDAV module and dufs --allow-upload. Every run writes a new file (the
    previous one is removed first) and is checked byte for byte."""
    big = files["big"]
    size = big.stat().st_size
    name = big.name
    base = TMPFS / f"ferry-bench-up-{os.getpid()}"
    CLEANUP_PATHS.append(base)
    rm(base)
    roots: dict[str, Path] = {}

    def root_for(server: str) -> Path:
        roots[server] = base / server
        (roots[server] / "in").mkdir(parents=True)
        return roots[server]

    # nginx buffers a PUT body in a temporary, then renames it into place:
    # on the same tmpfs, so the rename does not copy.
    body_tmp = base / "nginx-body"
    body_tmp.mkdir(parents=True)
    servers = [start_ferry(root_for("ferry"), extra=("--upload", "--overwrite")),
               start_nginx(root_for("nginx"), dav_temp=body_tmp)]
    if Path(DUFS).exists():
        servers.append(start_dufs(root_for("dufs"), extra=("--allow-upload",)))
        NOTES.append(f"scenario 8: {tool_version([DUFS])}")
    else:
        SKIPS.append("scenario 8: dufs not installed (bench/run.sh installs it with cargo install --locked)")
    ferry = servers[0]
    into = f"tmpfs ({TMPFS})"
    desc = f"upload: 1 file of {size // MiB} MiB from the page cache into tmpfs, loopback"
    label = {"ferry": "ferry serve --upload (HTTP PUT) + curl -T", "nginx": "nginx (WebDAV PUT) + curl -T",
             "dufs": "dufs --allow-upload + curl -T"}

    def curl_cmd(srv: Server) -> list:
        return ["curl", "-sSf", "-T", big, "-o", "/dev/null", "-w", "%{http_code} %{size_upload}",
                f"http://{srv.hostport}/in/{name}"]

    # (cell, server, command, whether curl reports status and size)
    runs = [(cell("8", desc, "ferry put -q", into, "GB/s", "upload", True), ferry,
             [FERRY, "put", ferry.hostport, big, "--to", "in", "-q"], False)]
    for srv in servers:
        runs.append((cell("8", "", label[srv.name], into, "GB/s", "upload"), srv, curl_cmd(srv), True))
    peaks: dict[int, list[float]] = {id(c): [] for c, _, _, _ in runs}
    hwm_reset = True

    def clear(srv: Server) -> None:
        """Empties the destination (the upload, and any temporary a failed
        run left: ferry's would otherwise be resumed), and nginx's body
        temporaries."""
        for p in list((roots[srv.name] / "in").iterdir()) + (list(body_tmp.iterdir()) if srv.name == "nginx" else []):
            rm(p)

    def one(c: Cell, srv: Server, cmd: list, curl: bool) -> None:
        nonlocal hwm_reset
        clear(srv)
        warm([big])
        settle_writeback()
        hwm_reset &= reset_peak_rss(srv.all_pids())
        before = srv.cpu()
        with tempfile.TemporaryFile() as meta:
            r = run_timed(cmd, stdout=meta)
            meta.seek(0)
            got = meta.read().decode(errors="replace").split()
        srv_cpu = srv.cpu() - before
        peak = proc_status_kib(srv.all_pids(), "VmHWM") / 1024
        ok = r.rc == 0
        if ok and curl and not (len(got) == 2 and got[0] in ("201", "204") and got[1] == str(size)):
            log(f"  {c.tool}: curl reported {' '.join(got)!r} (want 201 or 204 and {size} bytes sent)")
            ok = False
        if ok and not same_bytes(big, roots[srv.name] / "in" / name):
            log(f"  {c.tool}: the uploaded file is missing or differs from {big}")
            ok = False
        clear(srv)
        if ok:
            peaks[id(c)].append(peak)
            record(c, size / r.elapsed / 1e9, srv_cpu=srv_cpu, srv_bytes=size, cli_cpu=r.cpu, cli_bytes=size,
                   cli_rss=r.maxrss_kib, label=f" ({r.elapsed:.2f} s)")
        else:
            record(c, None)

    # Untimed: one upload by each first (servers warm, tmpfs pages allocated once).
    warm([big])
    for _, srv, cmd, _ in runs:
        clear(srv)
        run_timed(cmd)
        clear(srv)
    for r in range(N):
        log(f"scenario 8, round {r + 1}/{N}")
        for c, srv, cmd, curl in rotated(runs, r):
            one(c, srv, cmd, curl)
    for c, srv, _, _ in runs:
        if peaks[id(c)]:
            c.extra = (f"server peak RSS {max(peaks[id(c)]):.1f} MiB"
                       + (" (master + workers)" if srv.name == "nginx" else ""))
    NOTES.append("scenario 8: every upload is a new file on tmpfs (the previous one removed), checked byte for byte "
                 "against the source; server peak RSS is the largest VmHWM of any run"
                 + (", reset before each run (clear_refs)" if hwm_reset else
                    " (VmHWM could not be reset: the peak since the server started)")
                 + "; on a disk ferry would also fsync the file and its directory, nginx and dufs do not.")
    for srv in servers:
        srv.stop()
    rm(base)


# ---------------------------------------------------------------- scenario 9
def scenario9(files) -> None:
    """ferry get as an HTTP client: the big file from nginx on loopback into a
    directory on tmpfs, by ferry get http://..., curl, aria2c (one connection)
    and wget. Every run writes a new file (the directory is emptied first and
    after) and is checked byte for byte; the client's peak RSS is recorded."""
    big = files["big"]
    size = big.stat().st_size
    name = big.name
    dest = TMPFS / f"ferry-bench-http-{os.getpid()}"
    CLEANUP_PATHS.append(dest)
    rm(dest)
    dest.mkdir(parents=True)
    out = dest / name
    nginx = start_nginx(DATA)
    url = f"http://{nginx.hostport}/{rel(big)}"
    into = f"tmpfs ({TMPFS})"
    desc = f"HTTP client: 1 file of {size // MiB} MiB from nginx, page cache warm, loopback, into tmpfs"
    # (cell, command): ferry's is the reference row.
    runs = [(cell("9", desc, "ferry get http://… -o DIR/ -q", into, "GB/s", "http-client", True),
             [FERRY, "get", url, "-o", f"{dest}/", "-q"]),
            (cell("9", "", "curl -o FILE", into, "GB/s", "http-client"), ["curl", "-sSf", "-o", out, url])]
    if shutil.which("aria2c"):
        runs.append((cell("9", "", "aria2c -x1 -s1", into, "GB/s", "http-client"),
                     ["aria2c", *ARIA2_OPTS, "-x1", "-s1", "-d", dest, "-o", name, url]))
        NOTES.append(f"scenario 9: {tool_version(['aria2c'])}, options {' '.join(ARIA2_OPTS)} -d DIR -o NAME")
    else:
        SKIPS.append("scenario 9: aria2c not installed (bench/run.sh installs Debian's aria2)")
    if shutil.which("wget"):
        runs.append((cell("9", "", "wget -q -O FILE", into, "GB/s", "http-client"), ["wget", "-q", "-O", out, url]))
        NOTES.append(f"scenario 9: {tool_version(['wget'])}")
    else:
        SKIPS.append("scenario 9: wget not installed (bench/run.sh installs it)")
    NOTES.append(f"scenario 9: {tool_version(['curl'])}")
    strays: dict[str, set[str]] = {}

    def clear() -> list[str]:
        """Empties the destination; returns what was there besides the file
        (a .part, a control file... left by the tool)."""
        left = []
        for p in list(dest.iterdir()):
            if p.name != name:
                left.append(p.name)
            rm(p)
        return left

    def one(c: Cell, cmd: list) -> None:
        clear()
        warm([big])
        settle_writeback()
        before = nginx.cpu()
        r = run_timed(cmd)
        srv_cpu = nginx.cpu() - before
        ok = r.rc == 0
        if ok and not same_bytes(big, out):
            log(f"  {c.tool}: {out} is missing or differs from {big}")
            ok = False
        left = clear()
        if left:
            log(f"  {c.tool}: left {', '.join(left)} beside the file")
            strays.setdefault(c.tool, set()).update(left)
        if ok:
            record(c, size / r.elapsed / 1e9, srv_cpu=srv_cpu, srv_bytes=size, cli_cpu=r.cpu, cli_bytes=size,
                   cli_rss=r.maxrss_kib, label=f" ({r.elapsed:.2f} s)")
        else:
            record(c, None)

    t0 = time.monotonic()
    with pinned([big]) as pin:
        warm([big])
        log(f"scenario 9: {big.name} in the page cache ({time.monotonic() - t0:.0f} s"
            f"{', locked' if pin.ok else ', NOT locked'}); one untimed download by each")
        # Untimed: one download by each first (nginx warm, tmpfs pages allocated once).
        for _, cmd in runs:
            clear()
            run_timed(cmd)
        clear()
        for r in range(N):
            log(f"scenario 9, round {r + 1}/{N}")
            for c, cmd in rotated(runs, r):
                one(c, cmd)
    NOTES.append(f"scenario 9: {big.name} was " + ("held in the page cache throughout (mmap + mlock)" if pin.ok else
                 "NOT locked in the page cache (mlock failed), only checked with mincore before each run"))
    for c, _ in runs:
        if c.tool in strays:
            c.note = f"left {', '.join(sorted(strays[c.tool]))} beside the file"
    NOTES.append("scenario 9: every download is a new file on tmpfs (the directory emptied before and after), "
                 "checked byte for byte against the source; a run that differs counts as failed. nginx sends no "
                 "hash, so ferry get has nothing to verify against (it says 'not verified' without -q).")
    nginx.stop()
    rm(dest)


# ---------------------------------------------------------------- scenario 10
GARAGE_SH = ROOT / "deploy" / "garage.sh"
CLUSTER_SH = ROOT / "deploy" / "local-cluster.sh"
S3_BUCKET = "ferry"  # the bucket deploy/garage.sh creates
S3_PREFIX = "bench"  # bench/data goes under this prefix: s3://ferry/bench/big-1024M.bin, ...


def read_env_file(path: Path) -> dict[str, str]:
    """The `export K=V` lines of a file the deploy/ scripts write."""
    env = {}
    for line in path.read_text().splitlines():
        if line.startswith("export ") and "=" in line:
            k, v = line[len("export "):].split("=", 1)
            env[k.strip()] = v.strip()
    return env


def garage_bin() -> str:
    """The garage binary deploy/garage.sh uses: GARAGE_BIN, PATH, ~/.cargo/bin."""
    return (os.environ.get("GARAGE_BIN") or shutil.which("garage")
            or str(Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "garage"))


def pid_from(path: Path) -> int:
    """The pid a deploy/ script recorded (first word of the file), or 0."""
    try:
        word = path.read_text().split()[0]
    except (OSError, IndexError):
        return 0
    return int(word) if word.isdigit() else 0


def run_script(cmd, what: str, timeout: float = 300, env=None) -> None:
    """Runs a deploy/ script (its output into bench/out/logs/WHAT.log); raises if it fails."""
    with logfile(what) as f:
        r = subprocess.run([str(c) for c in cmd], stdin=subprocess.DEVNULL, stdout=f, stderr=f, timeout=timeout,
                           env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {r.returncode} (see bench/out/logs/{what}.log)")


def rclone(aws: dict, *args, timeout: float = 900) -> None:
    """rclone (Debian's: a standard S3 client, not ferry) against the store
    of `aws` as the remote `g:`."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone 1.60 fails every call with it set
    env.update(RCLONE_CONFIG_G_TYPE="s3", RCLONE_CONFIG_G_PROVIDER="Other",
               RCLONE_CONFIG_G_ACCESS_KEY_ID=aws["AWS_ACCESS_KEY_ID"],
               RCLONE_CONFIG_G_SECRET_ACCESS_KEY=aws["AWS_SECRET_ACCESS_KEY"],
               RCLONE_CONFIG_G_REGION=aws["AWS_REGION"], RCLONE_CONFIG_G_ENDPOINT=aws["AWS_ENDPOINT_URL"],
               RCLONE_CONFIG_G_FORCE_PATH_STYLE="true")
    with logfile("rclone") as f:
        r = subprocess.run(["rclone", *map(str, args)], env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                           timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"rclone {' '.join(map(str, args))} exited with {r.returncode} (see bench/out/logs/rclone.log)")


def settle_cpu(pids, limit: float = 60) -> bool:
    """Waits (at most `limit` s) until the processes use under 10 % of a core
    over half a second (a fresh local server hashes its tree ahead of demand)."""
    end = time.monotonic() + limit
    prev = proc_cpu(pids)
    while time.monotonic() < end:
        time.sleep(0.5)
        now = proc_cpu(pids)
        if now - prev < 0.05:
            return True
        prev = now
    return False


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet waited for, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass
class Cluster:
    """A cluster started by deploy/local-cluster.sh: HAProxy at `addr` in
    front of nodes node0, node1, ... (HAProxy's server names, in the order of
    `node_pids`), all serving the bucket of one Garage."""
    addr: str
    node_pids: list[int]
    haproxy_pid: int
    sock: Path
    garage_pid: int

    def stat(self) -> list[dict[str, str]]:
        """HAProxy's `show stat` rows of the nodes (backend `nodes`, without
        its FRONTEND and BACKEND lines), as column name -> value."""
        data = b""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            while len(data) < 1 << 20:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        lines = data.decode(errors="replace").splitlines()
        if not lines or not lines[0].startswith("# "):
            return []
        cols = lines[0][2:].split(",")
        rows = [dict(zip(cols, line.split(","))) for line in lines[1:] if line]
        return [r for r in rows if r.get("pxname") == "nodes" and r.get("svname") not in ("FRONTEND", "BACKEND")]

    def bout(self) -> int:
        """Bytes all nodes sent towards clients, by HAProxy's count."""
        return sum(int(r.get("bout") or 0) for r in self.stat())

    def cpu(self) -> dict[str, float]:
        return {"nodes": proc_cpu(self.node_pids), "HAProxy": proc_cpu([self.haproxy_pid]),
                "Garage": proc_cpu([self.garage_pid])}


def start_cluster(cdir: Path, nodes: int) -> Cluster:
    run_script(["bash", CLUSTER_SH, "start", cdir, "--nodes", nodes], "local-cluster", timeout=300,
               env=dict(os.environ, FERRY_BIN=str(FERRY)))
    ce = read_env_file(cdir / "cluster.env")
    return Cluster(ce["CLUSTER_ADDR"], [int(x) for x in ce["CLUSTER_NODE_PIDS"].split(",")],
                   int(ce["CLUSTER_HAPROXY_PID"]), Path(ce["CLUSTER_STATS_SOCKET"]),
                   pid_from(cdir / "garage" / "garage.pid"))


def scenario10(files) -> None:
    """Past one machine. (1) The same big file and tree served by `ferry
    serve DIR` and by `ferry serve s3://ferry/bench` over a one-node Garage
    (deploy/garage.sh; loaded once, untimed, with rclone). (2) 100 curl
    clients through HAProxy to 1 node, then to CLUSTER_NODES nodes
    (deploy/local-cluster.sh, on the same Garage). (3) `ferry get --retry 5`
    of the big file through HAProxy, clean and with its node SIGKILLed."""
    big = files["big"]
    size = big.stat().st_size
    tree = files["tree"]
    tree_files = files["tree_files"]
    nfiles = len(tree_files)
    cfiles = files["clients"]
    base = OUT / "s10"
    rm(base)
    cdir = base / "cluster"  # local-cluster.sh's DIR; its Garage is cdir/garage, started first by garage.sh
    gdir = cdir / "garage"
    gdir.mkdir(parents=True)
    trees = OUT / "s10-trees"  # every tree download kept until the benchmark ends (see scenario 2)
    rm(trees)
    trees.mkdir(parents=True)
    FINAL_PATHS.append(trees)
    shm = TMPFS / f"ferry-bench-s10-{os.getpid()}"
    CLEANUP_PATHS.append(shm)
    rm(shm)
    shm.mkdir(parents=True)
    url = f"s3://{S3_BUCKET}/{S3_PREFIX}"

    # --- the store and its data: once, untimed
    STOPPERS.append(lambda: gdir.exists() and run_script(["bash", GARAGE_SH, "stop", gdir], "garage", timeout=60))
    t0 = time.monotonic()
    run_script(["bash", GARAGE_SH, "start", gdir], "garage", timeout=120)
    aws = read_env_file(gdir / "env")
    t_garage = time.monotonic() - t0

    def key(p: Path) -> str:
        return f"g:{S3_BUCKET}/{S3_PREFIX}/{rel(p)}"

    rclone(aws, "copyto", big, key(big))
    rclone(aws, "copy", "--transfers", "8", tree, key(tree))
    rclone(aws, "copy", "--transfers", "8", cfiles[0].parent, key(cfiles[0].parent))
    os.sync()
    t_load = time.monotonic() - t0 - t_garage
    loaded = size + nfiles * TREE_KIB * 1024 + len(cfiles) * CLIENT_MIB * MiB
    log(f"scenario 10: Garage up in {t_garage:.0f} s, {loaded / MiB:.0f} MiB loaded with rclone in {t_load:.0f} s")
    store_files = [p for p in (gdir / "data").rglob("*") if p.is_file()]
    garage_pid = pid_from(gdir / "garage.pid")
    NOTES.append(f"scenario 10: {tool_version([garage_bin()])} (deploy/garage.sh: one node, replication 1, its data on "
                 f"ext4 under bench/out/s10, page cache warm as the local files are: read through with mincore "
                 f"before each run), started in {t_garage:.0f} s; {loaded / MiB:.0f} MiB loaded with "
                 f"{tool_version(['rclone'])} in {t_load:.0f} s (untimed, once). Server CPU of the object-store rows "
                 "is ferry's plus Garage's (the split in the note).")

    # --- (1) a local directory against the object store, one server each
    local = start_ferry(DATA)
    obj = start_ferry(url, env_extra=aws)
    servers = {"local": local, "s3": obj}
    desc_big = f"local directory vs object store (Garage, loopback): 1 file of {size // MiB} MiB"
    desc_tree = f"local directory vs object store (Garage, loopback): {nfiles} files of {TREE_KIB} KiB in 8 subdirs"
    cells = {
        ("local", "big"): cell("10", desc_big, "ferry serve DIR + ferry get -o - > /dev/null", "/dev/null", "GB/s",
                               "s10-big", True),
        ("s3", "big"): cell("10", "", f"ferry serve {url} + ferry get -o - > /dev/null", "/dev/null", "GB/s",
                            "s10-big"),
        ("local", "tree"): cell("10", desc_tree, "ferry serve DIR + ferry get -r", "ext4 dir", "files/s", "s10-tree",
                                True, cpu_per="file"),
        ("s3", "tree"): cell("10", "", f"ferry serve {url} + ferry get -r", "ext4 dir", "files/s", "s10-tree",
                             cpu_per="file"),
    }
    # The tree from the store may take a while (see bench/README.md).
    tree_timeout = max(TIMEOUT, nfiles * 0.25)
    acc = {k: {"ferry": 0.0, "garage": 0.0, "amount": 0, "hwm": 0.0, "ghwm": 0.0} for k in cells}
    hwm_ok = True

    def tree_ok(root: Path) -> bool:
        got = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith((".part", ".meta")))
        if got != nfiles:
            log(f"  expected {nfiles} files under {root}, found {got}")
        return got == nfiles

    def one(kind: str, what: str, r: int) -> None:
        nonlocal hwm_ok
        srv, c = servers[kind], cells[(kind, what)]
        warm(store_files if kind == "s3" else [big] if what == "big" else tree_files)
        settle_writeback()
        hwm_ok &= reset_peak_rss([srv.proc.pid, garage_pid])
        f0, g0 = proc_cpu([srv.proc.pid]), proc_cpu([garage_pid])
        if what == "big":
            with open(os.devnull, "wb") as devnull:
                run = run_timed([FERRY, "get", "-q", srv.hostport, rel(big), "-o", "-"], stdout=devnull)
            ok, amount = run.rc == 0, size
        else:
            root = trees / f"{kind}-r{r}"
            run = run_timed([FERRY, "get", "-q", "-r", srv.hostport, rel(tree), "-o", root], timeout=tree_timeout)
            ok, amount = run.rc == 0 and tree_ok(root), nfiles
        fcpu, gcpu = proc_cpu([srv.proc.pid]) - f0, (proc_cpu([garage_pid]) - g0) if kind == "s3" else 0.0
        if not ok:
            record(c, None)
            return
        a = acc[(kind, what)]
        a["ferry"] += fcpu
        a["garage"] += gcpu
        a["amount"] += amount
        a["hwm"] = max(a["hwm"], proc_status_kib([srv.proc.pid], "VmHWM") / 1024)
        a["ghwm"] = max(a["ghwm"], proc_status_kib([garage_pid], "VmHWM") / 1024)
        record(c, amount / run.elapsed / (1e9 if what == "big" else 1), srv_cpu=fcpu + gcpu, srv_bytes=amount,
               cli_cpu=run.cpu, cli_bytes=amount, cli_rss=run.maxrss_kib, label=f" ({run.elapsed:.2f} s)")

    # Untimed: each server hashes what it serves (the object store's hashes
    # are then kept in the store, under bench/.ferry/blake3/), caches warm.
    log("scenario 10: one untimed download of the file and the tree from each server")
    for kind, srv in servers.items():
        run_timed([FERRY, "get", "-q", srv.hostport, rel(big), "-o", "-"])
        run_timed([FERRY, "get", "-q", "-r", srv.hostport, rel(tree), "-o", trees / f"{kind}-warmup"],
                  timeout=tree_timeout)
    if not settle_cpu([local.proc.pid, obj.proc.pid, garage_pid]):
        log("scenario 10: the servers were still busy after 60 s; going on")
    runs = [("local", "big"), ("s3", "big"), ("local", "tree"), ("s3", "tree")]
    for r in range(N):
        log(f"scenario 10 (local vs object store), round {r + 1}/{N}")
        for kind, what in rotated(runs, r):
            one(kind, what, r)
    for (kind, what), c in cells.items():
        a, m = acc[(kind, what)], c.median()
        if not a["amount"]:
            continue
        if what == "big":
            per = lambda cpu: f"{cpu / (a['amount'] / GiB):.2f} s/GiB"  # noqa: E731
        else:
            per = lambda cpu: f"{cpu / a['amount'] * 1e6:.0f} µs/file"  # noqa: E731
        parts = [f"{nfiles / m:.2f} s"] if what == "tree" and m else []
        if kind == "s3":
            parts.append(f"server CPU: ferry {per(a['ferry'])} + Garage {per(a['garage'])}")
            parts.append(f"server peak RSS: ferry {a['hwm']:.1f} MiB, Garage {a['ghwm']:.1f} MiB")
        else:
            parts.append(f"server peak RSS {a['hwm']:.1f} MiB")
        c.extra = "; ".join(parts)
    a = acc[("s3", "big")]
    if a["amount"]:
        AIMS.append(f"- object store, {size // MiB} MiB streamed: ferry server peak RSS {a['hwm']:.1f} MiB (aim < 50 MiB)"
                    f" — {'met' if a['hwm'] < 50 else 'NOT met'}")
    else:
        AIMS.append(f"- object store, {size // MiB} MiB streamed: ferry server peak RSS: not measured")
    NOTES.append("scenario 10: server peak RSS = the largest VmHWM over the cell's runs"
                 + (", reset before each run (clear_refs)" if hwm_ok else " (could not be reset: since start)"))
    local.stop()
    obj.stop()

    # --- (2) and (3): deploy/local-cluster.sh on the same Garage (its start
    # finds the store running in cdir/garage; its stop stops it, and the next
    # start restarts it on the same data).
    if not CLUSTER_SH.exists():
        SKIPS.append("scenario 10: deploy/local-cluster.sh not found, so no cluster rows (1 vs "
                     f"{CLUSTER_NODES} nodes, node failure)")
        return
    STOPPERS.append(lambda: cdir.exists() and run_script(["bash", CLUSTER_SH, "stop", cdir], "local-cluster",
                                                         timeout=120))
    csize = CLIENT_MIB * MiB
    ctotal = csize * len(cfiles)
    sizes = [1, CLUSTER_NODES]
    desc_crowd = (f"{len(cfiles)} curl clients at once through HAProxy, {CLIENT_MIB} MiB each (distinct objects), "
                  f"nodes serving s3://{S3_BUCKET} (Garage)")
    agg, ttfb = {}, {}
    for i, n in enumerate(sizes):
        agg[n] = cell("10", desc_crowd if i == 0 else "", f"HAProxy + {n} node{'s' if n > 1 else ''}: aggregate",
                      "/dev/null", "GB/s", "s10-crowd", n == 1)
    for n in sizes:
        ttfb[n] = cell("10", "", f"HAProxy + {n} node{'s' if n > 1 else ''}: p99 time to first byte", "-", "ms",
                       "s10-ttfb", n == 1)
    crowd_cpu = {n: {"nodes": 0.0, "HAProxy": 0.0, "Garage": 0.0} for n in sizes}
    crowd_ttfb = {n: [] for n in sizes}
    desc_fail = (f"node failure: ferry get --retry 5, {size // MiB} MiB through HAProxy, {CLUSTER_NODES} nodes "
                 f"(s3://{S3_BUCKET}), into tmpfs")
    into = f"tmpfs ({TMPFS})"
    c_clean = cell("10", desc_fail, "no failure: time", into, "s", "s10-fail", True)
    c_fail = cell("10", "", f"serving node SIGKILLed at {KILL_AT:.0%} of the file: time", into, "s", "s10-fail")
    c_had = cell("10", "", "… bytes the client already had (its resume offset)", "-", "MiB", "s10-had")
    c_extra = cell("10", "", "… extra bytes fetched (Σ nodes' HAProxy bout − file size)", "-", "MiB", "s10-extra")
    overhead, kill_notes = [], []

    def crowd(cl: Cluster, n: int | None) -> None:
        """All clients at once; `n` None: untimed (a warm-up)."""
        warm(store_files)
        settle_writeback()
        d = base / "ttfb"
        rm(d)
        d.mkdir()
        urls = [f"http://{cl.addr}/{S3_PREFIX}/{rel(p)}" for p in cfiles]
        outs = [open(d / f"{i}.txt", "w+b") for i in range(len(urls))]
        try:
            cpu0 = cl.cpu()
            t0 = time.perf_counter()
            procs = [start_client(["curl", "-sS", "-o", "/dev/null", "-w",
                                   "%{http_code} %{size_download} %{time_starttransfer}", u], stdout=o)
                     for u, o in zip(urls, outs)]
            runs = [finish_client(p) for p in procs]
            elapsed = time.perf_counter() - t0
            cpu1 = cl.cpu()
            res = []
            for o in outs:
                o.seek(0)
                res.append(o.read().decode(errors="replace").split())
        finally:
            for o in outs:
                o.close()
        bad = [x for x in res if len(x) != 3 or x[0] != "200" or x[1] != str(csize)]
        ok = all(r.rc == 0 for r in runs) and not bad
        if not ok:
            log(f"  {len(bad)} of {len(res)} clients failed or got short bodies (e.g. {bad[:1]})")
        if n is None:
            return
        if not ok:
            record(agg[n], None)
            record(ttfb[n], None)
            return
        times = sorted(float(x[2]) for x in res)
        p99 = times[max(0, math.ceil(0.99 * len(times)) - 1)]
        crowd_ttfb[n].extend(times)
        for k in cpu0:
            crowd_cpu[n][k] += cpu1[k] - cpu0[k]
        record(agg[n], ctotal / elapsed / 1e9, srv_cpu=sum(cpu1[k] - cpu0[k] for k in cpu0), srv_bytes=ctotal,
               cli_cpu=sum(r.cpu for r in runs), cli_bytes=ctotal, cli_rss=max(r.maxrss_kib for r in runs),
               label=f" ({elapsed:.2f} s)")
        record(ttfb[n], p99 * 1000, label=f" (median {statistics.median(times) * 1000:.1f} ms, "
                                          f"max {times[-1] * 1000:.1f} ms)")

    def fetch_big(cl: Cluster, r: int, kill: bool) -> None:
        """One `ferry get --retry 5` of the big file through HAProxy into
        tmpfs; with `kill`, the node serving it is SIGKILLed once the .part
        holds KILL_AT of the file."""
        for p in list(shm.iterdir()):
            rm(p)
        warm(store_files)
        settle_writeback()
        out, part = shm / big.name, shm / (big.name + ".part")
        b0 = cl.bout()
        killed = None
        # Its stderr (reconnect and resume lines) stays in bench/out/logs/.
        with open(LOGS / f"s10-get-{'kill' if kill else 'clean'}-r{r}.err", "w+b") as err:
            p = start_client([FERRY, "get", "--retry", "5", cl.addr, f"{S3_PREFIX}/{rel(big)}", "-o", f"{shm}/"],
                             stderr=err)
            end = time.monotonic() + TIMEOUT
            while kill and running(p.pid) and time.monotonic() < end:
                got = size_of(part)
                if got >= KILL_AT * size:
                    serving = [row for row in cl.stat() if row.get("scur") not in (None, "", "0")]
                    if serving:
                        name = serving[0]["svname"]
                        os.kill(cl.node_pids[int(name.removeprefix("node"))], signal.SIGKILL)
                        killed = (name, got)
                    break
                time.sleep(0.002)
            run = finish_client(p)
            err.seek(0)
            text = err.read().decode(errors="replace")
        time.sleep(0.3)  # HAProxy closes the sessions, its counters settle
        sent = cl.bout() - b0
        ok = run.rc == 0 and same_bytes(big, out)
        for p in list(shm.iterdir()):
            rm(p)
        if not ok:
            log(f"  ferry get --retry 5: exit {run.rc}, or the saved file differs; stderr: {text.strip()[-300:]!r}")
        if not kill:
            if ok:
                overhead.append(sent - size)
            record(c_clean, run.elapsed if ok else None, cli_cpu=run.cpu, cli_bytes=size if ok else 0,
                   cli_rss=run.maxrss_kib, label=f" ({size / run.elapsed / 1e9:.2f} GB/s; nodes sent "
                                                 f"{sent - size:+,} bytes beyond the file)")
            return
        m = re.search(r"resumed at (\d+)", text)
        if not (ok and killed and m and "reconnecting in" in text):
            log(f"  node failure run: no kill or no resume (killed {killed}, stderr {text.strip()[-300:]!r})")
            for c in (c_fail, c_had, c_extra):
                record(c, None)
            return
        had = int(m.group(1))
        kill_notes.append(f"{killed[0]} at {killed[1] / MiB:.0f} MiB")
        record(c_fail, run.elapsed, cli_cpu=run.cpu, cli_bytes=size, cli_rss=run.maxrss_kib,
               label=f" (killed {killed[0]} with {killed[1] / MiB:.1f} MiB in the .part)")
        record(c_had, had / MiB)
        record(c_extra, (sent - size) / MiB, label=f" ({sent - size:,} bytes)")

    hashed = False
    for r in range(N):
        log(f"scenario 10 (cluster), round {r + 1}/{N}")
        for n in rotated(sizes, r):
            cl = start_cluster(cdir, n)
            try:
                if not hashed:
                    # Untimed: the nodes serve the whole bucket, so their
                    # hashes live under .ferry/blake3/, not bench/'s.
                    run_timed([FERRY, "get", "-q", cl.addr, f"{S3_PREFIX}/{rel(big)}", "-o", "-"])
                    hashed = True
                crowd(cl, None)
                crowd(cl, n)
                if n >= 2:
                    fetch_big(cl, r, False)
                    fetch_big(cl, r, True)
            finally:
                run_script(["bash", CLUSTER_SH, "stop", cdir], "local-cluster", timeout=120)
    for n in sizes:
        t = sorted(crowd_ttfb[n])
        cpu, amount = crowd_cpu[n], len(agg[n].values) * ctotal
        parts = []
        if amount:
            parts.append("server CPU: " + " + ".join(f"{k} {v / (amount / GiB):.2f}" for k, v in cpu.items())
                         + " s/GiB")
        if t:
            ttfb[n].extra = (f"all {len(t)} first bytes: median {statistics.median(t) * 1000:.1f} ms, "
                             f"max {t[-1] * 1000:.1f} ms")
        agg[n].extra = "; ".join(parts)
    if overhead and c_clean.values:
        c_clean.extra = (f"{size / c_clean.median() / 1e9:.2f} GB/s; the nodes sent "
                         f"{statistics.median(overhead):+,.0f} bytes beyond the file (median)")
    if kill_notes:
        c_fail.extra = "killed " + ", ".join(kill_notes)
    NOTES.append(f"scenario 10: the cluster rows use deploy/local-cluster.sh (`ferry serve s3://{S3_BUCKET} "
                 f"--proxy-protocol` nodes behind {tool_version(['haproxy']).split(' - ')[0]}, TCP mode, leastconn, health checks "
                 "every 500 ms) on the Garage above, started afresh for every cell (1 node, then "
                 f"{CLUSTER_NODES}, alternating) and warmed by one untimed round of the {len(cfiles)} clients; "
                 "server CPU there is the nodes' + HAProxy's + Garage's. p99 = nearest rank over the round's "
                 f"{len(cfiles)} clients (curl's time_starttransfer), median of the rounds. Node failure: the node "
                 "with a current session in HAProxy's `show stat` (scur) is SIGKILLed once the .part holds "
                 f"{KILL_AT:.0%} of the file; the client reconnects through HAProxy and resumes; every saved file is "
                 "compared byte for byte. Extra bytes = the sum of the nodes' `bout` (HAProxy's bytes from server "
                 "to client) over the run, minus the file's size.")


# ---------------------------------------------------------------- table
def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    return f"{os.cpu_count()} CPUs ({cpu}), {int(mem) // (1024 * 1024)} GiB RAM, Linux {os.uname().release}"


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if os.environ.get("FB_FERRY"):  # not built from this tree: say which binary, and what HEAD was
            return f"binary {FERRY} (FB_FERRY; the checkout's HEAD was {rev})"
        return rev + (" + uncommitted changes in src/" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def cpu_text(cpu: float, amount: int, per: str) -> str:
    if not amount:
        return ""
    if per == "file":
        return f"{cpu / amount * 1e6:.0f} µs/file"
    return f"{cpu / (amount / GiB):.2f} s/GiB"


def table(started: str, load_start: str, load_end: str, took: float) -> str:
    refs = {c.group: c.median() for c in CELLS if c.ref}
    lines = [
        f"ferry benchmark, {started}, ferry {git_rev()}; {machine()}; load average {load_start} at start, "
        f"{load_end} at end; {N} runs per cell (scenario 5: {LOSSY_N}), median shown; took {took:.0f} s.",
        "",
        "| # | scenario | tool | into | median | min – max | ÷ ferry | server CPU | client CPU | client peak RSS | note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in CELLS:
        m = c.median()
        med = fmt(m, c.unit) if m is not None else "failed"
        rng = f"{fmt(min(c.values), c.unit)} – {fmt(max(c.values), c.unit)}" if len(c.values) > 1 else ""
        ref = refs.get(c.group)
        ratio = f"{m / ref:.2f}" if (m is not None and ref) else ""
        srv, cli = cpu_text(c.srv_cpu, c.srv_bytes, c.cpu_per), cpu_text(c.cli_cpu, c.cli_bytes, c.cpu_per)
        note = "; ".join(x for x in (c.extra, f"{c.failed} run(s) failed" if c.failed else "", c.note) if x)
        crss = f"{c.cli_rss_kib / 1024:.1f} MiB" if c.cli_rss_kib else ""
        lines.append(f"| {c.scen} | {c.what} | {c.tool} | {c.into} | {med} | {rng} | {ratio} | {srv} | {cli} | {crss} "
                     f"| {note} |")
    lines.append("")
    lines.append("÷ ferry: this row's median divided by the median of the ferry row it is compared with (the row "
                 "showing 1.00 in the same scenario and destination; iperf3 rows compare with ferry to /dev/null). "
                 "GB/s and MB/s are 10^9 and 10^6 bytes per second. CPU columns: user + system CPU time per GiB moved "
                 "(per file in scenario 2), all runs of the cell together; server from /proc/PID/stat (utime + stime, "
                 "plus reaped children) before and after each run, client from the client processes' rusage. On a "
                 "busy machine CPU time is steadier than wall time. Client peak RSS: GNU time's %M (maximum resident set "
                 "size) of the client, the largest of the cell's runs; the largest member of the tree under `timeout`, "
                 "so never below timeout's own ~1.7 MiB; with several clients at once (scenarios 3, 4) the largest "
                 "client; blank where not measured.")
    for s in SKIPS + NOTES:
        lines.append(f"- {s}")
    lines.append("")
    lines.append(aims(refs))
    return "\n".join(lines) + "\n"


def aims(refs) -> str:
    def med(scen, tool_prefix, into=None):
        for c in CELLS:
            if c.scen == scen and c.tool.startswith(tool_prefix) and (into is None or c.into == into):
                return c.median()
        return None

    out = ["Aims (ferry against its peers, from the medians above):", ""]

    def line(text, ours, theirs, want, lower_better=False):
        if ours is None or theirs is None:
            out.append(f"- {text}: not measured")
            return
        r = theirs / ours if lower_better else ours / theirs
        ok = r >= want
        out.append(f"- {text}: {r:.2f}× (aim ≥ {want}×) — {'met' if ok else 'NOT met'}")

    line(f"{BIG_MIB} MiB, verified, into an ext4 file: ferry get ÷ nginx+curl",
         med("1", "ferry get -q", "ext4 file"), med("1", "nginx + curl", "ext4 file"), 2)
    line(f"{BIG_MIB} MiB, verified, to /dev/null: ferry get -o - ÷ nginx+curl",
         med("1", "ferry get -o -", "/dev/null"), med("1", "nginx + curl", "/dev/null"), 2)
    line("tree: ferry get -r ÷ curl keep-alive", med("2", "ferry get -r"), med("2", "nginx + curl"), 3)
    line("tree: ferry get -r ÷ rsync", med("2", "ferry get -r"), med("2", "rsync"), 1)
    line(f"{CLIENTS}×{CLIENT_MIB} MiB aggregate: ferry ÷ nginx", med("3", "ferry"), med("3", "nginx"), 1.5)
    idle = med("4", "ferry serve (+ ferry get -q): server RSS with")
    peak = med("4", "ferry serve (+ ferry get -q): server peak")
    for what, v in ((f"with {IDLE} idle", idle), (f"peak, {IDLE} idle + {IDLE_DL} downloading", peak)):
        if v is None:
            out.append(f"- ferry server RSS {what}: not measured")
        else:
            out.append(f"- ferry server RSS {what}: {v:.1f} MiB (aim < 50 MiB) — {'met' if v < 50 else 'NOT met'}")
    line("lossy link: ferry -j 8 ÷ ferry single stream", med("5", "ferry get -q -j 8"), med("5", "ferry get -q (one"), 3)
    line("lossy link: ferry -j 8 ÷ curl single stream", med("5", "ferry get -q -j 8"), med("5", "nginx + curl"), 3)
    line("lossy link: ferry -j 8 ÷ aria2c -x 8 -s 8 (issue 13)", med("5", "ferry get -q -j 8"),
         med("5", "nginx + aria2c"), 1)
    line("lossy link, both from nginx: ferry get -j 8 http:// ÷ aria2c -x 8 -s 8", med("5", "nginx + ferry get"),
         med("5", "nginx + aria2c"), 1)
    line(f"{BIG_MIB} MiB, verified, to /dev/null: ferry get -o - ÷ one iperf3 stream (issue 13)",
         med("1", "ferry get -o -", "/dev/null"), med("1", "iperf3 (memory", "memory"), 0.8)
    line(f"{BIG_MIB} MiB from nginx into tmpfs: ferry get http:// ÷ curl (issue 13)",
         med("9", "ferry get http://"), med("9", "curl -o"), 1)
    line(f"{BIG_MIB} MiB from nginx into tmpfs: ferry get http:// ÷ aria2c -x1 (issue 13)",
         med("9", "ferry get http://"), med("9", "aria2c -x1"), 1)
    for peer in ("nginx", "dufs", "miniserve"):
        line(f"HTTP, {BIG_MIB} MiB by curl: ferry ÷ {peer}", med("6", "ferry serve (HTTP)", "/dev/null"),
             med("6", peer, "/dev/null"), 1)
    for peer in ("nginx", "dufs", "miniserve"):
        c_f = [c.median() for c in CELLS if c.scen == "6" and c.group == "http-tree" and c.tool.startswith("ferry")]
        c_p = [c.median() for c in CELLS if c.scen == "6" and c.group == "http-tree" and c.tool.startswith(peer)]
        line(f"HTTP, {TREE_FILES}×{TREE_KIB} KiB over one keep-alive curl: ferry ÷ {peer}",
             c_f[0] if c_f else None, c_p[0] if c_p else None, 1)
    line(f"TLS, {BIG_MIB} MiB by curl, same certificate: ferry ÷ nginx", med("7", "ferry serve --tls"),
         med("7", "nginx (TLS)"), 1)
    line(f"TLS, {BIG_MIB} MiB: ferry get --tls ÷ plaintext ferry get", med("7", "ferry get --tls"),
         med("7", "ferry get (plaintext)"), 0.7)
    out.extend(AIMS)
    return "\n".join(out)


def main() -> int:
    if not FERRY.exists():
        print(f"no ferry binary at {FERRY}: run bench/run.sh (it builds one)", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for f in LOGS.iterdir():
        f.unlink()
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    load_start = Path("/proc/loadavg").read_text().split()[0]
    t0 = time.monotonic()
    if not HAVE_TIME:
        SKIPS.append(f"client peak RSS not measured: no GNU time at {TIME_BIN} (bench/run.sh installs Debian's time)")
    files = make_data()
    log(f"data ready ({time.monotonic() - t0:.0f} s)")
    for name, fn in (("1", scenario1), ("2", scenario2), ("3", scenario3), ("4", scenario4), ("5", scenario5),
                     ("6", scenario6), ("7", scenario7), ("8", scenario8), ("9", scenario9),
                     ("10", scenario10)):
        if name in SCENARIOS:
            ts = time.monotonic()
            try:
                fn(files)
            except Exception as e:  # noqa: BLE001 - report it and go on with the next scenario
                SKIPS.append(f"scenario {name} stopped early: {type(e).__name__}: {e}")
                log(SKIPS[-1])
                traceback.print_exc()
            log(f"scenario {name} took {time.monotonic() - ts:.0f} s")
            cleanup()
            if OUT / f"s{name}" not in FINAL_PATHS:
                rm(OUT / f"s{name}")
    load_end = Path("/proc/loadavg").read_text().split()[0]
    text = table(started, load_start, load_end, time.monotonic() - t0)
    (OUT / "latest.md").write_text(text)
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
