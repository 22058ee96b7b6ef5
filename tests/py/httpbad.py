#!/usr/bin/python3
"""A scripted HTTP/1.1 server for the blob backend's tests: it serves one blob
(SIZE bytes, byte i = (i * 7 + i // 4096) & 0xff) under /MODE/blob, and MODE
chooses how it misbehaves on ranged GETs.  HEAD is answered correctly unless
the mode is about the open.

    httpbad.py PORTFILE      listen on a free loopback port, write it to PORTFILE

Modes (path /MODE/blob; /redir/N/... redirects N times before /good/blob):
  good            206 with the range, keep-alive
  ignore-range    200 with the whole blob
  status-416      416 Range Not Satisfiable
  status-404      404 for the GET
  wrong-range     206 whose Content-Range names the next byte on
  short-range     206 with one byte less, its Content-Range and length agreeing
  close-mid-body  Content-Length right, half the body, then the connection closes
  no-length-short no Content-Length, one byte short, connection closes
  long-body       no Content-Length, one byte too many, connection closes
  lying-length    Content-Length one more than the range
  chunked         Transfer-Encoding: chunked (well-formed chunks)
  gzip            Content-Encoding: gzip
  bad-length      Content-Length: 12x
  error-503       503 on every GET
  flaky-503       503 on the first GET of each range, then 206
  flaky-reset     the first GET of each range gets its connection closed unanswered
  hang            never answers a GET
  etag-412        HEAD gives ETag "v1"; GETs are answered 412
  etag-changed    HEAD gives ETag "v1"; GETs give 206 with ETag "v2" (If-Match ignored)
  total-changed   206 whose Content-Range names a different blob length
  no-head         HEAD is refused (405): the length comes from GET bytes=0-0
  head-no-length  HEAD without Content-Length (so GET bytes=0-0 is asked)
  head-404        HEAD answered 404
  to-https        HEAD redirected to https://
"""
import os
import socket
import socketserver
import sys
import threading

SIZE = 1 << 20
BLOB = bytes(((i * 7 + i // 4096) & 0xFF) for i in range(SIZE))

seen = {}
seen_lock = threading.Lock()


def first_time(key):
    with seen_lock:
        n = seen.get(key, 0)
        seen[key] = n + 1
        return n == 0


class Handler(socketserver.StreamRequestHandler):
    def send(self, status, headers, body=b"", close=False):
        lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
        if close:
            lines.append("Connection: close")
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.wfile.flush()

    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            try:
                method, target, _ = line.decode().split(" ", 2)
            except ValueError:
                return
            hdrs = {}
            while True:
                h = self.rfile.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode().partition(":")
                hdrs[k.strip().lower()] = v.strip()
            if not self.answer(method, target, hdrs):
                return

    def answer(self, method, target, hdrs):
        parts = target.split("?")[0].strip("/").split("/")
        if parts[0] == "redir":
            n = int(parts[1])
            to = "/good/blob" if n <= 1 else "/redir/%d/blob" % (n - 1)
            self.send("302 Found", [("Location", to), ("Content-Length", "0")])
            return True
        mode = parts[0]
        etag = '"v1"'
        if method == "HEAD":
            if mode == "no-head":
                self.send("405 Method Not Allowed", [("Content-Length", "0")])
            elif mode == "head-404":
                self.send("404 Not Found", [("Content-Length", "0")])
            elif mode == "to-https":
                port = self.server.server_address[1]
                self.send("301 Moved", [("Location", "https://127.0.0.1:%d/good/blob" % port),
                                        ("Content-Length", "0")])
            elif mode == "head-no-length":
                self.send("200 OK", [("ETag", etag)])
            else:
                self.send("200 OK", [("Content-Length", str(SIZE)), ("ETag", etag),
                                     ("Accept-Ranges", "bytes")])
            return True
        rng = hdrs.get("range", "")
        if not rng.startswith("bytes="):
            self.send("200 OK", [("Content-Length", str(SIZE))], BLOB)
            return True
        a, b = (int(x) for x in rng[6:].split("-"))
        body = BLOB[a:b + 1]
        cr = ("Content-Range", "bytes %d-%d/%d" % (a, b, SIZE))
        cl = ("Content-Length", str(len(body)))
        ok = "206 Partial Content"
        key = (mode, a, b)
        if mode in ("good", "no-head", "head-no-length"):
            self.send(ok, [cr, cl, ("ETag", etag)], body)
        elif mode == "ignore-range":
            self.send("200 OK", [("Content-Length", str(SIZE))], BLOB)
        elif mode == "status-416":
            self.send("416 Range Not Satisfiable", [("Content-Range", "bytes */%d" % SIZE),
                                                    ("Content-Length", "0")])
        elif mode == "status-404":
            self.send("404 Not Found", [("Content-Length", "0")])
        elif mode == "wrong-range":
            self.send(ok, [("Content-Range", "bytes %d-%d/%d" % (a + 1, b + 1, SIZE)), cl],
                      BLOB[a + 1:b + 2])
        elif mode == "short-range":
            self.send(ok, [("Content-Range", "bytes %d-%d/%d" % (a, b - 1, SIZE)),
                           ("Content-Length", str(len(body) - 1))], body[:-1])
        elif mode == "close-mid-body":
            self.send(ok, [cr, cl], body[: len(body) // 2], close=True)
            return False
        elif mode == "no-length-short":
            self.send(ok, [cr], body[:-1], close=True)
            return False
        elif mode == "long-body":
            self.send(ok, [cr], body + b"x", close=True)
            return False
        elif mode == "lying-length":
            self.send(ok, [cr, ("Content-Length", str(len(body) + 1))], body + b"x")
        elif mode == "chunked":
            chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
            self.send(ok, [cr, ("Transfer-Encoding", "chunked")], chunk)
        elif mode == "gzip":
            self.send(ok, [cr, cl, ("Content-Encoding", "gzip")], body)
        elif mode == "bad-length":
            self.send(ok, [cr, ("Content-Length", "12x")], body, close=True)
            return False
        elif mode == "error-503":
            self.send("503 Service Unavailable", [("Content-Length", "0")])
        elif mode == "flaky-503":
            if first_time(key):
                self.send("503 Service Unavailable", [("Content-Length", "0")])
            else:
                self.send(ok, [cr, cl, ("ETag", etag)], body)
        elif mode == "flaky-reset":
            if first_time(key):
                self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return False
            self.send(ok, [cr, cl, ("ETag", etag)], body)
        elif mode == "hang":
            self.rfile.read()  # until the client gives up
            return False
        elif mode == "etag-412":
            self.send("412 Precondition Failed", [("Content-Length", "0")])
        elif mode == "etag-changed":
            self.send(ok, [cr, cl, ("ETag", '"v2"')], body)
        elif mode == "total-changed":
            self.send(ok, [("Content-Range", "bytes %d-%d/%d" % (a, b, SIZE * 2)), cl], body)
        else:
            self.send("404 Not Found", [("Content-Length", "0")])
        return True


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # clients give up on purpose (timeouts, refused answers)


def main():
    srv = Server(("127.0.0.1", 0), Handler)
    tmp = sys.argv[1] + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % srv.server_address[1])
    os.rename(tmp, sys.argv[1])
    srv.serve_forever()


if __name__ == "__main__":
    main()
