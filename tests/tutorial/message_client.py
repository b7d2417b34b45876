#!/usr/bin/env python3
"""Mirrors the tutorial's TCP 客户端 (section 2, both the plain and the
`with` version).

Usage: message_client.py HOST PORT MESSAGE

Like the tutorial: connect, send the message (UTF-8) in one send(), close.
It never reads, so any acknowledgement the server sends is never seen.

Differences: host, port and message come from argv instead of the
hard-coded 127.0.0.1:8000 and input('> '); a 30 s socket timeout.
"""
import socket
import sys


def main():
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    host, port, message = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect((host, port))
        s.send(message.encode())
    return 0


if __name__ == '__main__':
    sys.exit(main())
