#!/usr/bin/env python3
"""Mirrors the tutorial's 文件下载器 client.py (section 3, "案例 - 文件下载器").

Usage: download_client.py HOST PORT NAME OUTDIR [SAVE_AS]

Like the tutorial: connect, send the file name in one send() with no
terminator, then recv(1024) until the server closes and write everything to
OUTDIR/NAME in binary mode -- an empty file if the server sent nothing.

Differences, all for use in tests:
* host, port, name and output directory come from argv instead of the
  hard-coded 127.0.0.1:8000, input() and the desktop path;
* SAVE_AS (optional) is the local file name to write instead of NAME, so a
  test can request a hostile name such as ../secret;
* the local path must stay inside OUTDIR (the tutorial would happily write
  OUTDIR + '../x' or through an absolute name): otherwise exit status 2;
* a 60 s socket timeout, so a hung server cannot hang the test forever.
"""
import os
import socket
import sys


def main():
    if len(sys.argv) not in (5, 6):
        sys.stderr.write(__doc__)
        return 2
    host, port, name, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    save_as = sys.argv[5] if len(sys.argv) == 6 else name

    out_root = os.path.realpath(outdir)
    target = os.path.realpath(os.path.join(out_root, save_as))
    if os.path.dirname(target) != out_root:
        sys.stderr.write(f'refusing to write outside {outdir}: {save_as!r}\n')
        return 2

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect((host, port))

        # 将要下载的文件名发送到服务器 (one send, no terminator, as the tutorial)
        s.send(name.encode())

        # 将接收到的数据保存到一个文件中
        with open(target, 'wb') as f:
            while True:
                data = s.recv(1024)
                if data:
                    f.write(data)
                else:
                    break
    return 0


if __name__ == '__main__':
    sys.exit(main())
