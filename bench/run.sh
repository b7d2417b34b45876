#!/usr/bin/env bash
# ferry's benchmark: installs its peers from Debian packages, builds ferry,
# makes the data under bench/data and prints one markdown table (also written
# to bench/out/latest.md). See bench/README.md.
#
# Needs root (nginx and rsync run as root, network namespaces, apt-get).
# Settings are environment variables (FB_N=5 runs per cell, ...), listed in
# bench/README.md. Progress goes to stderr, the table to stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
BENCH_DIR=$PWD/bench

if [ "$(id -u)" != 0 ]; then
    echo "bench/run.sh: run as root (it installs packages, runs nginx/rsyncd as root and creates network namespaces)" >&2
    exit 2
fi

# Whether scenario $1 is to run (FB_SCENARIOS, default all).
want() {
    [[ ",${FB_SCENARIOS:-1,2,3,4,5,6,7,8,9,10}," == *",$1,"* ]]
}

POLICY_CREATED=
cleanup() {
    # bench.py cleans up after itself; this catches what an abrupt stop leaves.
    for ns in ferrybench-srv ferrybench-cli; do
        ip netns del "$ns" 2>/dev/null || true
    done
    # Scenario 10's cluster and store (started by the deploy/ scripts,
    # which record their pids in these directories).
    if [ -d "$BENCH_DIR/out/s10/cluster" ] && [ -f deploy/local-cluster.sh ]; then
        timeout 60 bash deploy/local-cluster.sh stop "$BENCH_DIR/out/s10/cluster" >/dev/null 2>&1 || true
    fi
    if [ -d "$BENCH_DIR/out/s10/cluster/garage" ]; then
        timeout 60 bash deploy/garage.sh stop "$BENCH_DIR/out/s10/cluster/garage" >/dev/null 2>&1 || true
    fi
    if [ -n "$POLICY_CREATED" ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- peers, from Debian packages
need=()
for pair in iperf3:iperf3 nginx:nginx nc:netcat-openbsd curl:curl rsync:rsync ip:iproute2 \
            tc:iproute2 timeout:coreutils /usr/bin/python3:python3 openssl:openssl \
            aria2c:aria2 wget:wget /usr/bin/time:time \
            $(want 10 && echo rclone:rclone haproxy:haproxy); do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
# nc must be the OpenBSD one (-N, -l HOST PORT).
if command -v nc >/dev/null 2>&1 && ! nc -h 2>&1 | grep -q -- '-N'; then
    need+=(netcat-openbsd)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "bench: installing ${need[*]}" >&2
    # Keep the packages' own services (nginx on :80, ...) from starting:
    # the benchmark runs its own instances with its own configs.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_CREATED=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >&2
    timeout 600 apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
    if [ -n "$POLICY_CREATED" ]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_CREATED=
    fi
fi

# --- ferry
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH=$HOME/.cargo/bin:$PATH
fi
if [ -z "${FB_FERRY:-}" ]; then
    echo "bench: cargo build --release" >&2
    timeout 900 cargo build --release --quiet >&2
fi

# --- Garage 2.5.0 (scenario 10's object store): reused when installed, else
# built by deploy/garage.sh (about 10 minutes on 2 cores, once).
if want 10; then
    timeout 1800 bash deploy/garage.sh install >&2 \
        || echo "bench: could not install garage; scenario 10 will fail to start its store" >&2
fi

# --- dufs and miniserve (scenarios 6 and 8), the file servers users of this
# kind of tool pick: crates, so installed with cargo (reused when already there).
for tool in $( (want 6 || want 8) && echo dufs miniserve); do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/$tool" ]; then
        echo "bench: cargo install --locked $tool" >&2
        timeout 1800 cargo install --locked --quiet "$tool" >&2 \
            || echo "bench: could not install $tool; scenario 6 runs without it" >&2
    fi
done

# 1,000 idle connections plus clients, on both ends of each.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 8192 ]; then
    ulimit -Hn 65536 2>/dev/null && ulimit -n 65536 || true
fi

mkdir -p "$BENCH_DIR/out"
# The driver bounds each command itself; this bounds the whole run.
timeout -k 10 "${FB_TOTAL_TIMEOUT:-3600}" /usr/bin/python3 "$BENCH_DIR/bench.py"
echo "bench: done in ${SECONDS} s (install + build + benchmark)" >&2
