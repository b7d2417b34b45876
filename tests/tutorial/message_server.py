#!/usr/bin/env python3
"""Mirrors the tutorial's two TCP 服务器 programs (section 1).

Usage: message_server.py [--ack | --once]

Without a flag it is section 1.1's loop server ("循环为多个客户端服务"):
accept clients one after another forever, print each recv(1024) chunk
until the client closes, never answer.

With --ack it also answers each chunk with '已收到你的信息' (UTF-8), as the
first server of section 1 does for its single recv (a one-chunk client sees
that server's answer).

With --once it is exactly section 1's first server: accept one client,
recv(1024) once, print it, answer '已收到你的信息', close, exit.

Differences, all for use in tests:
* binds 127.0.0.1 (loopback only) on port 0 and prints `PORT <n>` (flushed)
  as its first line, instead of '' and port 8000;
* a chunk that is not valid UTF-8 prints with replacement characters
  instead of crashing the server;
* a 30 s timeout per client; stdout is UTF-8 and flushed line by line.
"""
import socket
import sys

ACK = '已收到你的信息'


def log(text):
    print(text, flush=True)


def main():
    args = sys.argv[1:]
    if args not in ([], ['--ack'], ['--once']):
        sys.stderr.write(__doc__)
        return 2
    ack = args == ['--ack']
    sys.stdout.reconfigure(encoding='utf-8', errors='replace')

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        s.listen(128)
        log(f'PORT {s.getsockname()[1]}')

        if args == ['--once']:
            conn, addr = s.accept()
            with conn:
                conn.settimeout(30)
                message = conn.recv(1024)
                log(f'接收到的数据为: {message.decode("utf-8", errors="replace")}')
                conn.send(ACK.encode())
            return 0

        while True:
            conn, addr = s.accept()
            log(f'客户端 {addr} 连接到服务器')
            with conn:
                conn.settimeout(30)
                try:
                    while True:
                        data = conn.recv(1024)
                        # 当接收到数据为空时, 表示客户端已经断开链接
                        if data:
                            log(f'接收到客户端信息: {data.decode("utf-8", errors="replace")}')
                            if ack:
                                conn.send(ACK.encode())
                        else:
                            log(f'客户端 {addr} 断开连接')
                            break
                except OSError as e:
                    log(f'客户端 {addr} 出错: {e}')


if __name__ == '__main__':
    sys.exit(main())
