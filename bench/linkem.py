#!/usr/bin/env python3
"""A userspace stand-in for `tc qdisc ... netem delay D loss P` on both ends
of a link, for kernels built without sch_netem (CONFIG_NET_SCH_NETEM).

It creates two TUN devices (IFF_TUN | IFF_NO_PI) in the current network
namespace and forwards every IP packet read from one to the other after a
fixed one-way delay, dropping each packet independently with probability
`loss`, in both directions. The caller moves the devices into its own two
network namespaces and gives them addresses; the open file descriptors keep
working after the move. The result is the same as two namespaces joined by a
veth pair with netem on both ends: RTT = 2 * delay, loss on each direction.

Usage: linkem.py DEV_A DEV_B DELAY_MS LOSS_PERCENT MAX_SECONDS

Prints "ready" once both devices exist, exits after MAX_SECONDS, on SIGTERM,
or when stdin closes (so it never outlives the benchmark that started it).
Packets are not reordered; there is no rate limit (netem had none either).
"""

import collections
import fcntl
import os
import random
import selectors
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def main() -> int:
    dev_a, dev_b = sys.argv[1], sys.argv[2]
    delay = float(sys.argv[3]) / 1000.0
    loss = float(sys.argv[4]) / 100.0
    deadline = time.monotonic() + float(sys.argv[5])
    fds = {dev_a: open_tun(dev_a), dev_b: open_tun(dev_b)}
    fa, fb = fds[dev_a], fds[dev_b]
    peer = {fa: fb, fb: fa}
    # One FIFO per direction: with a constant delay, arrival order is
    # departure order, so a deque is already sorted by due time.
    queues = {fa: collections.deque(), fb: collections.deque()}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    sel = selectors.DefaultSelector()
    sel.register(fa, selectors.EVENT_READ)
    sel.register(fb, selectors.EVENT_READ)
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ)
    print("ready", flush=True)
    rnd = random.random
    now = time.monotonic
    counts = {"fwd": 0, "drop": 0}
    while not stop and now() < deadline:
        t = now()
        timeout = 0.2
        for q in queues.values():
            if q:
                timeout = min(timeout, max(0.0, q[0][0] - t))
        for key, _ in sel.select(timeout):
            fd = key.fd
            if fd not in peer:
                if not os.read(fd, 4096):
                    stop.append(1)
                continue
            due = now() + delay
            q = queues[fd]
            for _ in range(512):
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                if rnd() < loss:
                    counts["drop"] += 1
                    continue
                q.append((due, pkt))
        t = now()
        for src, q in queues.items():
            dst = peer[src]
            while q and q[0][0] <= t:
                _, pkt = q.popleft()
                try:
                    os.write(dst, pkt)
                    counts["fwd"] += 1
                except (BlockingIOError, OSError):
                    counts["drop"] += 1
    print(f"linkem: forwarded {counts['fwd']} packets, dropped {counts['drop']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
