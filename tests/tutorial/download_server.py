#!/usr/bin/env python3
"""Mirrors the tutorial's 文件下载器 server.py (section 3).

Usage: download_server.py ROOT

Like the tutorial: accept clients one after another forever; for each,
recv(1024) once as the file name, open it, send it in 1024-byte pieces and
close. For a file it cannot open it sends nothing and closes.

Differences, all for use in tests:
* binds 127.0.0.1 (loopback only, never all interfaces) on port 0 and prints
  `PORT <n>` (flushed) as its first line, instead of '' and port 8000;
* serves names relative to ROOT (not the working directory) and treats a
  name that resolves outside ROOT like a missing file;
* an undecodable name is decoded with replacement characters instead of
  crashing the whole server (the tutorial's .decode() is outside its try);
* a 30 s timeout per client, so a silent client cannot wedge the loop;
* stdout is UTF-8 and flushed line by line, so a test can read the log.
"""
import os
import socket
import sys


def log(text):
    print(text, flush=True)


def send_file_to_client(conn, addr, root):
    # 接收客户端需要下载对文件名
    file_name = conn.recv(1024).decode('utf-8', errors='replace')
    log(f'客户端 {addr} 需要下载的文件是: {file_name}')

    # 读取文件内容, 并发送给客户端
    try:
        path = os.path.realpath(os.path.join(root, file_name))
        if os.path.commonpath([root, path]) != root:
            raise PermissionError(f'{file_name!r} is outside the root')
        with open(path, 'rb') as f:
            while True:
                content = f.read(1024)
                if content:
                    conn.sendall(content)
                else:
                    break
    except Exception:  # the tutorial uses a bare except
        log(f'文件 {file_name} 下载失败')
    else:
        log(f'文件 {file_name} 下载成功')


def main():
    if len(sys.argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    sys.stdout.reconfigure(encoding='utf-8', errors='replace')
    root = os.path.realpath(sys.argv[1])

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        s.listen(128)
        log(f'PORT {s.getsockname()[1]}')

        while True:
            conn, addr = s.accept()
            log(f'客户端 {addr} 连接到服务器')
            with conn:
                conn.settimeout(30)
                try:
                    send_file_to_client(conn, addr, root)
                except OSError as e:
                    log(f'客户端 {addr} 出错: {e}')


if __name__ == '__main__':
    sys.exit(main())
