#!/usr/bin/env bash
# deploy/garage.sh - run a throw-away single-node Garage (S3-compatible object
# store) on loopback, for ferry's tests and benchmarks (groundwork for issue 14).
#
# Everything lives in one directory (config, metadata, data, log, pid, env),
# the node listens on 127.0.0.1 only, and all setup is done with Garage's own
# CLI. Written against Garage 2.5.0; the CLI syntax differs in 0.9.x / 1.x.
#
#   bash deploy/garage.sh install          # ensure garage 2.5.0 is installed
#   bash deploy/garage.sh start DIR        # start (or reuse) a node in DIR
#   . DIR/env                              # AWS_* variables for S3 clients
#   bash deploy/garage.sh status DIR       # is it running? print the env
#   bash deploy/garage.sh stop DIR         # stop it, DIR is kept
set -euo pipefail

GARAGE_VERSION=2.5.0
# The exact build we use: no default features (no sqlite/consul/k8s/...),
# bundled libs, LMDB metadata engine only.
CARGO_INSTALL=(cargo install --locked garage --version "$GARAGE_VERSION"
               --no-default-features --features bundled-libs,lmdb)
BUCKET=ferry
KEY_NAME=ferry-key
REGION=garage
START_TIMEOUT=30   # seconds to wait for the RPC/CLI to answer after launch
HEALTH_TIMEOUT=30  # seconds to wait for the cluster to be healthy after layout
STOP_TIMEOUT=15    # seconds to wait after SIGTERM before SIGKILL

usage() {
    cat <<EOF
usage: bash deploy/garage.sh COMMAND [DIR]

Single-node Garage $GARAGE_VERSION object store on 127.0.0.1, for tests/benchmarks.

commands:
  install      reuse garage $GARAGE_VERSION from PATH or ~/.cargo/bin, else build
               it with: ${CARGO_INSTALL[*]}
               (the build takes 11-13 min on 2 cores)
  start DIR    write DIR/garage.toml (free loopback ports, random secrets) unless
               it exists, start 'garage server' (log DIR/garage.log, pid
               DIR/garage.pid), assign+apply a 1-node layout, create key
               '$KEY_NAME' and bucket '$BUCKET' (read/write/owner), write and
               print DIR/env. Re-running on a running DIR only prints the env;
               on a stopped DIR it restarts with the same config and data.
  status DIR   say whether the node in DIR runs; print DIR/env if so
  stop DIR     SIGTERM the node (SIGKILL after ${STOP_TIMEOUT}s); DIR is kept
  -h, --help   this text

DIR/env exports AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
AWS_DEFAULT_REGION, AWS_ENDPOINT_URL (path-style S3 at http://127.0.0.1:PORT),
plus GARAGE_CONFIG_FILE (so plain 'garage ...' talks to this node),
GARAGE_BUCKET, GARAGE_ADMIN_URL and GARAGE_ADMIN_TOKEN.
Set GARAGE_BIN to use a specific garage binary.
EOF
}

log() { printf 'garage.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- install -----------------------------------------------------------------

# True if $1 is an executable garage binary of the pinned version. Its
# --version prints e.g. "garage cargo:2.5.0 [features: bundled-libs, lmdb]"
# (release binaries print "garage v2.5.0").
is_pinned_garage() {
    [[ -x "$1" ]] || return 1
    local v
    v=$(timeout 10 "$1" --version 2>/dev/null | head -n1) || return 1
    [[ "$v" =~ ^garage\ ([a-z]+:|v)?${GARAGE_VERSION//./\\.}([^0-9.]|$) ]]
}

# Print the path of a usable garage binary, or return 1.
find_garage() {
    local c
    for c in "${GARAGE_BIN:-}" "$(command -v garage 2>/dev/null || true)" \
             "${CARGO_HOME:-$HOME/.cargo}/bin/garage"; do
        if [[ -n "$c" ]] && is_pinned_garage "$c"; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

cmd_install() {
    local g
    if g=$(find_garage); then
        log "garage $GARAGE_VERSION already installed: $g ($("$g" --version | head -n1))"
        return 0
    fi
    command -v cargo >/dev/null || die "garage $GARAGE_VERSION not found and cargo is not installed"
    log "garage $GARAGE_VERSION not found; building it, this takes 11-13 min on 2 cores:"
    log "  ${CARGO_INSTALL[*]}"
    "${CARGO_INSTALL[@]}"
    g=$(find_garage) || die "cargo install finished but no garage $GARAGE_VERSION found"
    log "installed: $g"
}

need_garage() {
    GARAGE=$(find_garage) || die "garage $GARAGE_VERSION not found; run: bash $0 install"
}

# --- helpers for start/stop ----------------------------------------------------

# Three distinct free TCP ports on 127.0.0.1 (all sockets are held open at once
# so they differ; there is a small race until garage binds them).
free_ports() {
    python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
EOF
}

# Value of `key = "..."` / `key = N` from the first matching line of garage.toml
# inside the given [section] ("" = top level). Enough for the file we write.
toml_get() {
    local file=$1 section=$2 key=$3
    awk -v want="$section" -v key="$key" '
        /^\[/ { sec = $0; gsub(/[\[\] ]/, "", sec); next }
        sec == want && $1 == key {
            sub(/^[^=]*=[ ]*/, ""); gsub(/"/, ""); print; exit
        }' "$file"
}

# PID from DIR/garage.pid if that process is alive and is a garage server.
running_pid() {
    local dir=$1 pid
    [[ -f "$dir/garage.pid" ]] || return 1
    pid=$(<"$dir/garage.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    # Guard against a recycled pid: the command line must be our garage server.
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "garage.toml server" || return 1
    printf '%s\n' "$pid"
}

g() { "$GARAGE" -c "$CONF" "$@"; }

write_config() {
    local dir=$1 rpc s3 admin
    read -r rpc s3 admin < <(free_ports)
    umask 077   # the file holds rpc_secret and admin_token
    cat >"$CONF" <<EOF
# Generated by deploy/garage.sh: single-node Garage $GARAGE_VERSION on loopback.
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "lmdb"
# One copy of everything: there is only one node.
replication_factor = 1
# Garage's default zstd stays: measured against compression_level "none"
# (2026-12-04, 3 x 512 MiB of random data read through ferry, twice), the
# default cost Garage less CPU (3.9-4.0 s against 4.4-4.8 s) and was faster.

# Inter-node RPC; the CLI also talks to the daemon through it.
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(openssl rand -hex 32)"

# S3 API, path-style (http://127.0.0.1:$s3/BUCKET/KEY); no root_domain, so no
# virtual-hosted-style buckets.
[s3_api]
api_bind_addr = "127.0.0.1:$s3"
s3_region = "$REGION"

# Admin API (GET /health needs no token; the rest needs admin_token).
[admin]
api_bind_addr = "127.0.0.1:$admin"
admin_token = "$(openssl rand -hex 32)"
EOF
    umask 022
    log "wrote $CONF (rpc $rpc, s3 $s3, admin $admin)"
}

# Wait (bounded) until `garage status` gets an answer from the daemon.
wait_ready() {
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    until g status >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$DIR/garage.log" >&2 || true
            die "garage server exited during startup (see $DIR/garage.log)"
        fi
        ((SECONDS < deadline)) || die "garage did not answer 'status' within ${START_TIMEOUT}s (see $DIR/garage.log)"
        sleep 0.2
    done
}

# Wait (bounded) until `garage health` says the cluster is usable and the S3
# port answers HTTP.
wait_healthy() {
    local s3=$1 deadline=$((SECONDS + HEALTH_TIMEOUT))
    until g health -q >/dev/null 2>&1 &&
          curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$s3/"; do
        ((SECONDS < deadline)) || die "cluster not healthy within ${HEALTH_TIMEOUT}s (see $DIR/garage.log)"
        sleep 0.2
    done
}

print_env() { cat "$DIR/env"; }

# --- start ---------------------------------------------------------------------

cmd_start() {
    need_garage
    mkdir -p "$1"
    DIR=$(cd "$1" && pwd)
    CONF=$DIR/garage.toml

    # Already running here: do not touch it, just say so and print the env.
    local pid
    if pid=$(running_pid "$DIR"); then
        log "already running in $DIR (pid $pid); not starting another one"
        if [[ -f "$DIR/env" ]]; then
            print_env
        else
            log "but $DIR/env is missing (an earlier start did not finish?): run 'stop $DIR' then 'start $DIR'"
        fi
        return 0
    fi

    # Reuse an existing config (same ports, secrets and data) so a stopped DIR
    # can be restarted; otherwise write a fresh one.
    if [[ -f "$CONF" ]]; then
        log "reusing existing $CONF"
    else
        write_config "$DIR"
    fi
    mkdir -p "$DIR/meta" "$DIR/data"
    local s3 admin admin_token
    s3=$(toml_get "$CONF" s3_api api_bind_addr); s3=${s3##*:}
    admin=$(toml_get "$CONF" admin api_bind_addr); admin=${admin##*:}
    admin_token=$(toml_get "$CONF" admin admin_token)

    # Launch the daemon detached from this shell; RUST_LOG keeps the log small.
    local t0ns
    t0ns=$(date +%s%N)
    RUST_LOG=${RUST_LOG:-garage=info} nohup "$GARAGE" -c "$CONF" server \
        </dev/null >>"$DIR/garage.log" 2>&1 &
    pid=$!
    echo "$pid" >"$DIR/garage.pid"
    log "started garage server (pid $pid, log $DIR/garage.log)"
    wait_ready "$pid"
    log "RPC ready after $(( ($(date +%s%N) - t0ns) / 1000000 )) ms"

    # Node id: full hex public key ("<id>@127.0.0.1:<port>" on stdout).
    local node_id
    node_id=$(g node id -q 2>/dev/null | head -n1)
    node_id=${node_id%%@*}
    [[ "$node_id" =~ ^[0-9a-f]{64}$ ]] || die "could not parse node id: '$node_id'"

    # Layout: give the node a role (zone dc1, 1 GB capacity) and apply it as
    # layout version 1. Skipped when a layout was already applied (restart).
    if g layout show 2>/dev/null | grep -q '^Current cluster layout version: 0$'; then
        g layout assign -z dc1 -c 1G "$node_id" >/dev/null
        g layout apply --version 1 >/dev/null
        log "layout v1 applied (node ${node_id:0:16}, zone dc1, 1G)"
    else
        log "layout already applied, leaving it"
    fi
    wait_healthy "$s3"

    # Access key, bucket and permissions (each only if missing; key names are
    # not unique in Garage, so never create a second one).
    if ! g key info "$KEY_NAME" >/dev/null 2>&1; then
        g key create "$KEY_NAME" >/dev/null
        log "created key $KEY_NAME"
    fi
    if ! g bucket info "$BUCKET" >/dev/null 2>&1; then
        g bucket create "$BUCKET" >/dev/null
        log "created bucket $BUCKET"
    fi
    g bucket allow --read --write --owner "$BUCKET" --key "$KEY_NAME" >/dev/null

    local key_id secret
    key_id=$(g key info --key-id "$KEY_NAME")
    secret=$(g key info --secret-key "$KEY_NAME")
    [[ "$key_id" =~ ^GK[0-9a-f]+$ && "$secret" =~ ^[0-9a-f]{64}$ ]] ||
        die "could not read key id / secret of $KEY_NAME"

    # Client environment, readable only by us (it holds the secret).
    # Notes for clients: requests must be path-style and SigV4-signed for
    # region "garage"; Garage rejects requests without x-amz-content-sha256
    # (curl 7.88 --aws-sigv4 does not add it: pass
    # -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'). rclone 1.60 fails with
    # LoadCustomCABundleError when AWS_CA_BUNDLE is set; unset it for rclone.
    (umask 077; cat >"$DIR/env" <<EOF
# Garage $GARAGE_VERSION on loopback, written by deploy/garage.sh start $DIR
# curl: curl --aws-sigv4 aws:amz:$REGION:s3 --user "\$AWS_ACCESS_KEY_ID:\$AWS_SECRET_ACCESS_KEY" -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' \$AWS_ENDPOINT_URL/$BUCKET/KEY
export AWS_ACCESS_KEY_ID=$key_id
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_REGION=$REGION
export AWS_DEFAULT_REGION=$REGION
export AWS_ENDPOINT_URL=http://127.0.0.1:$s3
export GARAGE_BUCKET=$BUCKET
export GARAGE_CONFIG_FILE=$CONF
export GARAGE_ADMIN_URL=http://127.0.0.1:$admin
export GARAGE_ADMIN_TOKEN=$admin_token
EOF
    )
    log "ready $(( ($(date +%s%N) - t0ns) / 1000000 )) ms after launch; bucket '$BUCKET' at http://127.0.0.1:$s3 (path-style, region $REGION)"
    log "env written to $DIR/env (source it: . $DIR/env)"
    print_env
}

# --- status / stop ---------------------------------------------------------------

cmd_status() {
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
    local pid
    if pid=$(running_pid "$DIR"); then
        log "running in $DIR (pid $pid)"
        [[ -f "$DIR/env" ]] && print_env
    else
        log "not running in $DIR"
        return 1
    fi
}

cmd_stop() {
    DIR=$(cd "$1" 2>/dev/null && pwd) || die "no such directory: $1"
    local pid deadline
    if ! pid=$(running_pid "$DIR"); then
        log "not running in $DIR"
        rm -f "$DIR/garage.pid"
        return 0
    fi
    # Graceful shutdown first (garage drains its servers in ~1-2 s) ...
    kill -TERM "$pid"
    deadline=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    # ... then force it.
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after ${STOP_TIMEOUT}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$DIR/garage.pid"
    log "stopped (pid $pid); $DIR kept"
}

# --- main ------------------------------------------------------------------------

case "${1:-}" in
    install) cmd_install ;;
    start|stop|status)
        [[ $# -eq 2 ]] || { usage >&2; exit 2; }
        "cmd_$1" "$2" ;;
    -h|--help|help) usage ;;
    *) usage >&2; exit 2 ;;
esac
