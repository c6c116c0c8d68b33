#!/usr/bin/env python3
"""HTTP/1.1 client with exact control of framing, for tests/integration/tests/http_framing.rs.

usage: http_framing.py PORT RECORD_FILE [split]

Talks to a server on 127.0.0.1:PORT (nginx in the test) over raw sockets with TCP_NODELAY, so
every send() leaves as its own TCP segment on loopback. Bodies (uploads and the served file) hold
HTTP request and status lines at the start of segments: a recogniser that looks at segment or read
starts without following Content-Length and chunked framing takes them for messages.

Writes one line `METHOD STATUS` per answer it read to RECORD_FILE (what the client side of the
sidecar must count). With `split`, only runs the unfollowable case: a request head sent in two
segments on a connection of its own.
"""
import socket
import sys
import time

EVIL_REQ = b"GET /evil HTTP/1.1\r\nHost: evil\r\n\r\n"
EVIL_ANS = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

port = int(sys.argv[1])
record = open(sys.argv[2], "w")
split_only = len(sys.argv) > 3 and sys.argv[3] == "split"


def connect():
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(30)
    return s


class Conn:
    def __init__(self):
        self.s = connect()
        self.buf = b""

    def send(self, *pieces):
        """Each piece in its own segment: TCP_NODELAY, and a pause after each so that the
        kernel's autocorking (small writes queued behind one not yet sent are merged) does
        not join them."""
        for p in pieces:
            self.s.sendall(p)
            time.sleep(0.003)

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("server closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def answer(self, method):
        """Read one final answer (skipping 1xx); returns (status, body, keep_alive)."""
        while True:
            status = int(self._line().split()[1])
            headers = {}
            while True:
                line = self._line()
                if not line:
                    break
                k, v = line.split(b":", 1)
                headers[k.strip().lower()] = v.strip().lower()
            if status >= 200:
                break
        body = b""
        if method == "HEAD" or status in (204, 304):
            pass
        elif headers.get(b"transfer-encoding") == b"chunked":
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
        elif b"content-length" in headers:
            body = self._take(int(headers[b"content-length"]))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            body, self.buf = self.buf, b""
        record.write(f"{method} {status}\n")
        record.flush()
        return status, body, headers.get(b"connection") != b"close"

    def answer_keep(self, method):
        """answer(), then this connection, or a new one if the server closed it."""
        if self.answer(method)[2]:
            return self
        self.close()
        return Conn()

    def close(self):
        self.s.close()


def head(method, path, extra=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + extra + b"\r\n")


def evil_body(n):
    """n bytes that start with a request line and hold status lines further on."""
    unit = EVIL_REQ + b"x" * 100 + EVIL_ANS + b"y" * 100
    return (unit * (n // len(unit) + 1))[:n]


if split_only:
    # The head arrives in two segments: the recogniser cannot see where it ends in the first
    # one, so it must drop the connection (counted as untracked), not guess.
    c = Conn()
    body = evil_body(3000)
    h = head("PUT", "/upload/split", f"Content-Length: {len(body)}\r\n".encode())
    c.send(h[:20], h[20:], body[:1500], body[1500:])
    c.answer("PUT")
    c.send(head("GET", "/file.txt"))
    c.answer("GET")
    c.close()
    sys.exit(0)

# 5 PUTs on one keep-alive connection: Content-Length bodies of several KiB sent in pieces that
# each start with a request line or a status line.
c = Conn()
for i in range(5):
    pieces = [evil_body(1000)] * 6 + [evil_body(i * 700 + 1)]
    body = b"".join(pieces)
    c.send(head("PUT", f"/upload/{i}", f"Content-Length: {len(body)}\r\n".encode()), *pieces)
    c = c.answer_keep("PUT")
c.close()

# 10 POSTs: 5 with Content-Length (head and body in one segment, then a body-only segment that
# starts with a status line), 5 chunked (size line, data starting with a request line, CRLF as
# separate segments; the last one with everything in one segment and a trailer).
c = Conn()
for i in range(5):
    first, rest = EVIL_ANS + evil_body(2000), evil_body(2000 + i * 300)
    # two of them to the static file: nginx answers 405 (and discards the body)
    path = "/file.txt" if i >= 3 else "/post/cl"
    c.send(head("POST", path, f"Content-Length: {len(first) + len(rest)}\r\n".encode())
           + first, rest)
    c = c.answer_keep("POST")
for i in range(5):
    c.send(head("POST", "/post/chunked", b"Transfer-Encoding: chunked\r\n"))
    if i < 4:
        for n in (3000, 1200 + i, 4096):
            data = evil_body(n)
            c.send(f"{n:x}\r\n".encode(), data, b"\r\n")
        c.send(b"0\r\n\r\n")
    else:
        chunks = b"".join(f"{n:X};ext=1\r\n".encode() + evil_body(n) + b"\r\n"
                          for n in (500, 70, 2048))
        c.send(chunks + b"0\r\nX-Trailer: GET /evil HTTP/1.1\r\n\r\n")
    c = c.answer_keep("POST")
c.close()

# GETs of a served file whose content holds status lines (the answer's body starts with one),
# several per keep-alive connection; a missing path; a HEAD.
for _ in range(2):
    c = Conn()
    for _ in range(3):
        c.send(head("GET", "/file.txt"))
        st, body, _ = c.answer("GET")
        assert st == 200 and body.startswith(b"HTTP/1.1 200 OK"), (st, body[:40])
    c.send(head("GET", "/missing"))
    c.answer("GET")
    c.send(head("HEAD", "/file.txt"))
    c.answer("HEAD")
    c.close()

# Pipelining: 3 requests in one write, answers read after; twice on one connection, the second
# time with an upload in the middle whose body follows in the same write.
c = Conn()
c.send(head("GET", "/file.txt") + head("GET", "/missing") + head("HEAD", "/file.txt"))
c.answer("GET")
c.answer("GET")
c.answer("HEAD")
up = evil_body(1500)
c.send(head("GET", "/file.txt")
       + head("POST", "/post/pipe", f"Content-Length: {len(up)}\r\n".encode()) + up
       + head("GET", "/missing"))
c.answer("GET")
c.answer("POST")
c.answer("GET")
c.close()

# One request per connection.
for _ in range(2):
    c = Conn()
    c.send(head("GET", "/file.txt", b"Connection: close\r\n"))
    c.answer("GET")
    c.close()
