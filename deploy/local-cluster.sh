#!/usr/bin/env bash
# deploy/local-cluster.sh - a real ferry cluster on one machine, on loopback:
# one Garage (S3-compatible store, via deploy/garage.sh), N ferry nodes all
# serving its bucket s3://ferry, and HAProxy in front of them with the
# settings of deploy/haproxy.cfg. For trying a cluster out, for tests and for
# benchmarks; nothing listens beyond 127.0.0.1.
#
# Everything lives in one directory: garage/ (the store), nodeI.log,
# haproxy.cfg, haproxy.log, haproxy.sock (stats socket), *.pid, cluster.env.
#
#   bash deploy/local-cluster.sh start DIR [--nodes N] [--port P]
#   . DIR/cluster.env                        # CLUSTER_ADDR, AWS_*, ...
#   ferry get --retry 5 "$CLUSTER_ADDR" FILE
#   bash deploy/local-cluster.sh status DIR
#   bash deploy/local-cluster.sh stop DIR    # DIR is kept
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
GARAGE_SH=$HERE/garage.sh
BUCKET=ferry        # the bucket deploy/garage.sh creates
DEFAULT_NODES=3
MAX_NODES=32
ADDR_TIMEOUT=15     # seconds for a node to print its address
UP_TIMEOUT=30       # seconds for HAProxy to see every node UP
STOP_TIMEOUT=10     # seconds after SIGTERM before SIGKILL

usage() {
    cat <<EOF
usage: bash deploy/local-cluster.sh COMMAND DIR [OPTIONS]

A ferry cluster on 127.0.0.1: Garage (bucket '$BUCKET'), N nodes running
'ferry serve s3://$BUCKET --proxy-protocol', HAProxy in front of them.

commands:
  start DIR [--nodes N] [--port P]
               install what is missing (haproxy with apt-get, garage with
               deploy/garage.sh install), start Garage in DIR/garage, N nodes
               (default $DEFAULT_NODES; logs DIR/nodeI.log) and HAProxy on
               127.0.0.1:P (default: a free port; log DIR/haproxy.log, stats
               socket DIR/haproxy.sock); wait until HAProxy sees every node
               UP, then write and print DIR/cluster.env.
               Refused while a cluster recorded in DIR still runs.
  status DIR   which of DIR's processes are alive, and HAProxy's view of the
               nodes; exits 1 unless everything runs
  stop DIR     SIGTERM HAProxy and the nodes (SIGKILL after ${STOP_TIMEOUT}s),
               then stop Garage; remove DIR/cluster.env, keep the rest of DIR
               (logs, Garage's data). Only processes recorded in DIR are
               signalled; stopping twice is harmless.
  -h, --help   this text

DIR/cluster.env ('export K=V' lines, lists comma-separated):
  CLUSTER_ADDR          HAProxy's address: where clients connect
  CLUSTER_NODES         the nodes' addresses, in HAProxy's order (node0,...)
  CLUSTER_NODE_PIDS     their pids (each leads its own process group)
  CLUSTER_NODE_LOGS     their logs
  CLUSTER_HAPROXY_PID   HAProxy's pid
  CLUSTER_STATS_SOCKET  HAProxy's stats socket ('show stat')
  CLUSTER_BUCKET        $BUCKET
  then every line of DIR/garage/env (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ...)

The ferry binary: \$FERRY_BIN, else target/release/ferry of this repository,
else 'ferry' on PATH, else built with 'cargo build --release'.
EOF
}

log() { printf 'local-cluster.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- processes recorded in DIR -------------------------------------------------
#
# Each process we start is recorded as "PID STARTTIME" in DIR/NAME.pid, where
# STARTTIME is field 22 of /proc/PID/stat (clock ticks since boot). A pid is
# only ever signalled while both still match, so a recycled pid is never
# touched. Every process is started with setsid, so it leads its own process
# group (and session) and is signalled as a group.

# Start time of a running PID; fails for a dead or zombie process.
start_time() {
    local stat fields
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    # The command name (field 2) may hold spaces; the fields after its ") "
    # do not: field 3 lands in fields[0], so field 22 in fields[19].
    read -r -a fields <<<"${stat##*) }"
    # A zombie (Z, X: dead, not yet reaped) no longer runs.
    [[ "${fields[0]}" != [ZX] && "${fields[19]:-}" =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "${fields[19]}"
}

record() {   # record NAME PID LOG
    local t
    if ! t=$(start_time "$2"); then
        tail -n 20 "$3" >&2 || true
        die "$1 exited at once (see $3)"
    fi
    echo "$2 $t" >"$DIR/$1.pid"
    # Not our job any more: no "Killed" notice from bash if a failed start
    # has to stop it.
    disown "$2" 2>/dev/null || true
}

# PID of the process recorded in DIR/NAME.pid if it still runs, else fail.
live_pid() {
    local f=$DIR/$1.pid pid t now
    [[ -f "$f" ]] || return 1
    read -r pid t <"$f" || return 1
    [[ "$pid" =~ ^[0-9]+$ && "$t" =~ ^[0-9]+$ ]] || return 1
    now=$(start_time "$pid") || return 1
    [[ "$now" == "$t" ]] || return 1
    printf '%s\n' "$pid"
}

# Names of DIR's recorded processes, HAProxy first (it stops sending new
# clients before the nodes go away).
recorded_names() {
    local f
    [[ -f "$DIR/haproxy.pid" ]] && echo haproxy
    for f in "$DIR"/node*.pid; do
        [[ -f "$f" ]] || continue
        f=${f##*/}
        echo "${f%.pid}"
    done | sort -V
}

# Signal a recorded process: its whole group if it leads one, else itself.
signal() {   # signal SIG PID
    local pgid
    pgid=$(ps -o pgid= -p "$2" 2>/dev/null | tr -d ' ') || true
    if [[ "$pgid" == "$2" ]]; then
        kill "-$1" -- "-$2" 2>/dev/null || true
    else
        kill "-$1" "$2" 2>/dev/null || true
    fi
}

# --- HAProxy's stats socket -------------------------------------------------------

# One command to HAProxy's stats socket; its answer on stdout. python3 rather
# than socat, which may not be installed.
haproxy_cmd() {   # haproxy_cmd SOCKET COMMAND
    python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
out = b""
while len(out) < 1 << 20:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode(errors="replace"))
EOF
}

# "NAME STATUS CHECK" per server of backend 'nodes', from 'show stat'.
node_states() {   # node_states SOCKET
    haproxy_cmd "$1" "show stat" 2>/dev/null | awk -F, '
        /^# / { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $1 == "nodes" && $2 != "BACKEND" && $2 != "FRONTEND" {
            st = $(col["status"]); ck = $(col["check_status"])
            gsub(/ /, "_", st)
            print $2, st, (ck == "" ? "-" : ck)
        }'
}

# --- install -----------------------------------------------------------------------

# HAProxy's binary: on the PATH, or in an sbin directory a non-root PATH
# may lack.
find_haproxy() {
    local c
    for c in "$(command -v haproxy 2>/dev/null || true)" /usr/sbin/haproxy /usr/local/sbin/haproxy; do
        if [[ -n "$c" && -x "$c" ]]; then
            HAPROXY=$c
            return 0
        fi
    done
    return 1
}

install_missing() {
    if ! find_haproxy; then
        log "haproxy not found; installing it with apt-get"
        local sudo=()
        if [[ $(id -u) -ne 0 ]]; then
            command -v sudo >/dev/null || die "haproxy is missing and we are not root: apt-get install haproxy"
            sudo=(sudo -n)
        fi
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >&2
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy </dev/null >&2
        find_haproxy || die "apt-get installed no haproxy"
    fi
    bash "$GARAGE_SH" install </dev/null
}

# The ferry binary, built if nowhere to be found.
find_ferry() {
    local release=${CARGO_TARGET_DIR:-$REPO/target}/release/ferry
    if [[ -n "${FERRY_BIN:-}" ]]; then
        [[ -x "$FERRY_BIN" ]] || die "FERRY_BIN is not an executable: $FERRY_BIN"
        FERRY=$FERRY_BIN
    elif [[ -x "$release" ]]; then
        FERRY=$release
    elif FERRY=$(command -v ferry 2>/dev/null); then
        :
    else
        command -v cargo >/dev/null || die "no ferry binary (FERRY_BIN, $release, PATH) and no cargo to build one"
        log "no ferry binary found; building it: cargo build --release"
        cargo build --release --manifest-path "$REPO/Cargo.toml" </dev/null >&2
        [[ -x "$release" ]] || die "cargo build finished but $release is missing"
        FERRY=$release
    fi
    FERRY=$(cd "$(dirname "$FERRY")" && pwd)/$(basename "$FERRY")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- start -------------------------------------------------------------------------

# On a failed or interrupted start, stop whatever was started, so nothing is
# left running; the logs stay in DIR.
STARTED=0
on_start_exit() {
    local rc=$?
    if [[ $STARTED -eq 0 && $rc -ne 0 ]]; then
        log "start failed; stopping what was started (logs kept in $DIR)"
        set +e
        stop_all
    fi
}

# Launch one node; print nothing, record its pid.
start_node() {   # start_node I
    local i=$1
    # The store's variables from garage/env replace any AWS_* of the caller
    # that could spoil the signing (a session token of other credentials).
    # shellcheck disable=SC1091
    (
        unset AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_PROFILE
        . "$DIR/garage/env"
        export RUST_LOG=ferry=info
        exec setsid "$FERRY" serve "s3://$BUCKET" --bind 127.0.0.1 --port 0 --proxy-protocol \
            </dev/null >"$DIR/node$i.log" 2>&1
    ) &
    record "node$i" $! "$DIR/node$i.log"
}

# Wait (bounded) for node I's startup line and print its address: the first
# line is "ferry: serving s3://ferry (...) on 127.0.0.1:PORT (...)".
node_addr() {   # node_addr I
    local i=$1 logf=$DIR/node$1.log line deadline=$((SECONDS + ADDR_TIMEOUT))
    local re='^ferry: serving .* on (127\.0\.0\.1:[0-9]+)'
    while :; do
        line=$(grep -m1 '^ferry: serving ' "$logf" 2>/dev/null || true)
        if [[ "$line" =~ $re ]]; then
            printf '%s\n' "${BASH_REMATCH[1]}"
            return 0
        fi
        if ! live_pid "node$i" >/dev/null; then
            tail -n 20 "$logf" >&2 || true
            die "node$i exited before printing its address (see $logf)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 20 "$logf" >&2 || true
            die "node$i printed no address within ${ADDR_TIMEOUT}s (see $logf)"
        fi
        sleep 0.1
    done
}

# HAProxy's configuration: deploy/haproxy.cfg's settings, on loopback, with a
# stats socket in DIR and faster health checks.
write_haproxy_cfg() {   # write_haproxy_cfg PORT ADDR...
    local port=$1 i=0 a
    shift
    {
        cat <<EOF
# Generated by deploy/local-cluster.sh for $DIR: the settings of
# deploy/haproxy.cfg (see its comments), on 127.0.0.1 only, with a stats
# socket here and health checks every 500 ms.
global
    maxconn 2000
    stats socket $DIR/haproxy.sock mode 600 level admin
    # With -db, to stderr, i.e. $DIR/haproxy.log.
    log stderr format raw local0

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 5m
    timeout server 5m
    retries 3
    option redispatch
    option splice-auto

frontend ferry
    bind 127.0.0.1:$port
    default_backend nodes

backend nodes
    balance leastconn
    option httpchk GET /_ferry/health
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2 send-proxy-v2 check-send-proxy
EOF
        for a in "$@"; do
            echo "    server node$i $a check"
            i=$((i + 1))
        done
    } >"$DIR/haproxy.cfg"
}

# Wait (bounded) until HAProxy has checked every node and found it UP.
wait_all_up() {   # wait_all_up N
    local n=$1 deadline=$((SECONDS + UP_TIMEOUT)) states up
    while :; do
        states=$(node_states "$DIR/haproxy.sock" || true)
        up=$(awk '$2 == "UP" && $3 ~ /^L7OK/' <<<"$states" | wc -l)
        ((up == n)) && return 0
        if ! live_pid haproxy >/dev/null; then
            tail -n 20 "$DIR/haproxy.log" >&2 || true
            die "haproxy exited (see $DIR/haproxy.log)"
        fi
        if ((SECONDS >= deadline)); then
            printf '%s\n' "$states" >&2
            tail -n 20 "$DIR/haproxy.log" >&2 || true
            die "HAProxy saw $up of $n nodes UP after ${UP_TIMEOUT}s (see $DIR/haproxy.log, $DIR/node*.log)"
        fi
        sleep 0.2
    done
}

cmd_start() {
    local nodes=$DEFAULT_NODES port="" t0
    t0=$(now_ms)
    [[ $# -ge 1 ]] || { usage >&2; exit 2; }
    local dir_arg=$1
    shift
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --nodes) [[ $# -ge 2 ]] || die "--nodes needs a number"; nodes=$2; shift 2 ;;
            --nodes=*) nodes=${1#*=}; shift ;;
            --port) [[ $# -ge 2 ]] || die "--port needs a number"; port=$2; shift 2 ;;
            --port=*) port=${1#*=}; shift ;;
            *) usage >&2; exit 2 ;;
        esac
    done
    if ! [[ "$nodes" =~ ^[0-9]{1,3}$ ]] || ((nodes < 1 || nodes > MAX_NODES)); then
        die "--nodes must be 1..$MAX_NODES, not '$nodes'"
    fi
    if [[ -n "$port" ]] && { ! [[ "$port" =~ ^[0-9]{1,5}$ ]] || ((port < 1 || port > 65535)); }; then
        die "--port must be 1..65535, not '$port'"
    fi

    mkdir -p "$dir_arg"
    DIR=$(cd "$dir_arg" && pwd)
    # cluster.env's values are unquoted and comma-separated.
    [[ "$DIR" =~ ^[A-Za-z0-9_./+@-]+$ ]] ||
        die "DIR must be a plain path (letters, digits, _ . / + @ -): $DIR"
    # A unix socket path is limited to 107 bytes.
    ((${#DIR} <= 90)) || die "DIR is too long for HAProxy's stats socket: $DIR"
    local name
    for name in $(recorded_names); do
        if live_pid "$name" >/dev/null; then
            die "a cluster already runs in $DIR ($name is alive): run 'bash $0 stop $DIR' first"
        fi
    done
    rm -f "$DIR"/node*.pid "$DIR"/node*.log "$DIR/haproxy.pid" "$DIR/cluster.env"

    install_missing
    find_ferry
    log "ferry: $FERRY"
    trap on_start_exit EXIT
    trap 'exit 130' INT TERM HUP

    # The store (garage.sh prints its env on stdout; ours comes at the end).
    # Under setsid (-w: waiting for garage.sh), so the garage server it
    # leaves running is in a session of its own too, like the nodes.
    setsid -w bash "$GARAGE_SH" start "$DIR/garage" </dev/null >/dev/null
    [[ -f "$DIR/garage/env" ]] || die "garage.sh wrote no $DIR/garage/env"

    # The nodes, all launched before any is waited for.
    local i addrs=() pids=() logs=()
    for ((i = 0; i < nodes; i++)); do
        start_node "$i"
    done
    for ((i = 0; i < nodes; i++)); do
        addrs+=("$(node_addr "$i")")
        pids+=("$(live_pid "node$i")")
        logs+=("$DIR/node$i.log")
        log "node$i: ${addrs[i]} (pid ${pids[i]}, log ${logs[i]})"
    done

    # HAProxy.
    [[ -n "$port" ]] || port=$(free_port)
    write_haproxy_cfg "$port" "${addrs[@]}"
    "$HAPROXY" -c -q -f "$DIR/haproxy.cfg" </dev/null >&2 ||
        die "haproxy refused $DIR/haproxy.cfg"
    rm -f "$DIR/haproxy.sock"
    setsid "$HAPROXY" -db -f "$DIR/haproxy.cfg" </dev/null >"$DIR/haproxy.log" 2>&1 &
    record haproxy $! "$DIR/haproxy.log"
    local hpid
    hpid=$(live_pid haproxy) || die "haproxy exited at once (see $DIR/haproxy.log)"
    wait_all_up "$nodes"
    log "haproxy: 127.0.0.1:$port (pid $hpid, log $DIR/haproxy.log), $nodes of $nodes nodes UP"

    # The environment, readable only by us (garage/env holds the secret key).
    (
        umask 077
        IFS=,   # joins the arrays below with commas
        {
            echo "export CLUSTER_ADDR=127.0.0.1:$port"
            echo "export CLUSTER_NODES=${addrs[*]}"
            echo "export CLUSTER_NODE_PIDS=${pids[*]}"
            echo "export CLUSTER_NODE_LOGS=${logs[*]}"
            echo "export CLUSTER_HAPROXY_PID=$hpid"
            echo "export CLUSTER_STATS_SOCKET=$DIR/haproxy.sock"
            echo "export CLUSTER_BUCKET=$BUCKET"
            cat "$DIR/garage/env"
        } >"$DIR/cluster.env.tmp"
        mv "$DIR/cluster.env.tmp" "$DIR/cluster.env"
    )
    STARTED=1
    log "ready in $(( $(now_ms) - t0 )) ms; env written to $DIR/cluster.env (source it: . $DIR/cluster.env)"
    cat "$DIR/cluster.env"
    echo "stop with: bash $0 stop $DIR"
}

# --- stop / status -------------------------------------------------------------------

# SIGTERM every recorded process, wait (bounded), SIGKILL the rest, stop Garage.
stop_all() {
    local name pid alive=() left deadline t0
    t0=$(now_ms)
    for name in $(recorded_names); do
        if pid=$(live_pid "$name"); then
            signal TERM "$pid"
            alive+=("$name")
        fi
    done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        left=()
        for name in "${alive[@]}"; do
            live_pid "$name" >/dev/null && left+=("$name")
        done
        ((${#left[@]} == 0 || SECONDS >= deadline)) && break
        sleep 0.1
    done
    for name in "${left[@]}"; do
        pid=$(live_pid "$name") || continue
        log "$name (pid $pid) still alive after ${STOP_TIMEOUT}s: SIGKILL"
        signal KILL "$pid"
    done
    # SIGKILL takes effect at once, but give the kernel a moment to reap.
    deadline=$((SECONDS + 2))
    for name in "${left[@]}"; do
        while live_pid "$name" >/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    done
    ((${#alive[@]} == 0)) || log "stopped ${alive[*]} in $(( $(now_ms) - t0 )) ms"
    for name in $(recorded_names); do
        live_pid "$name" >/dev/null || rm -f "$DIR/$name.pid"
    done
    # Its addresses and pids are now stale: no one should source it.
    rm -f "$DIR/haproxy.sock" "$DIR/cluster.env"
    if [[ -d "$DIR/garage" ]]; then
        bash "$GARAGE_SH" stop "$DIR/garage" </dev/null >/dev/null || true
    fi
}

cmd_stop() {
    [[ $# -eq 1 ]] || { usage >&2; exit 2; }
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
    local t0
    t0=$(now_ms)
    stop_all
    local name
    for name in $(recorded_names); do
        live_pid "$name" >/dev/null && die "$name could not be stopped"
    done
    log "stopped in $(( $(now_ms) - t0 )) ms; $DIR kept"
}

cmd_status() {
    [[ $# -eq 1 ]] || { usage >&2; exit 2; }
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
    local name pid ok=0 any=0
    for name in $(recorded_names); do
        any=1
        if pid=$(live_pid "$name"); then
            echo "$name: running (pid $pid)"
        else
            echo "$name: not running"
            ok=1
        fi
    done
    ((any)) || { echo "no cluster recorded in $DIR"; ok=1; }
    if bash "$GARAGE_SH" status "$DIR/garage" </dev/null >/dev/null 2>&1; then
        echo "garage: running"
    else
        echo "garage: not running"
        ok=1
    fi
    if live_pid haproxy >/dev/null && [[ -S "$DIR/haproxy.sock" ]]; then
        echo "HAProxy's view (server, status, last check):"
        node_states "$DIR/haproxy.sock" | sed 's/^/  /' || true
    fi
    return "$ok"
}

# --- main ----------------------------------------------------------------------------

case "${1:-}" in
    start|stop|status)
        cmd=$1
        shift
        "cmd_$cmd" "$@" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
