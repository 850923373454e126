#!/usr/bin/env bash
# Records the real-traffic HTTP/1 fixtures used by agent/http/tests/real_capture.rs:
#
#   h1-python.pcap    tcpdump on lo (Ethernet link type) while curl talks to a small
#                     Python HTTP/1.1 server: keep-alive, Content-Length and chunked
#                     bodies, HEAD, 204, 100-continue, a chunked upload, a cookie-setting
#                     login redirect, a 404 and an HTTP/1.0 close-delimited response.
#   h1-python.pcapng  the same traffic written by dumpcap as pcapng on the "any"
#                     pseudo-interface (Linux cooked v2 link type).
#
# Needs root, tcpdump, dumpcap (tshark package), python3, curl. Only loopback traffic is generated.
# Usage: record-h1-fixture.sh [OUTPUT_DIR]   (default: the directory of this script)
set -euo pipefail

out_dir=$(cd "${1:-$(dirname "$0")}" && pwd)
work=$(mktemp -d)
cleanup() {
    [[ -n "${server_pid:-}" ]] && kill "$server_pid" 2>/dev/null || true
    [[ -n "${dump_pid:-}" ]] && kill "$dump_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))

cat >"$work/server.py" <<'PY'
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n)

    def send_body(self, status, body, extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"first chunk\r\n", b"HTTP/1.1 200 not a response\r\n", b"x" * 3000):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif self.path == "/old":
            # HTTP/1.0-style response delimited by closing the connection.
            self.protocol_version = "HTTP/1.0"
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"body until close\n" * 50)
        elif self.path.startswith("/account"):
            self.send_body(200, b"<html>account page</html>\n" * 100, [("Content-Type", "text/html")])
        else:
            self.send_body(404, b"not found\n")

    do_HEAD = do_GET

    def do_POST(self):
        data = self.body()
        if self.path == "/login":
            self.send_body(302, b"", [("Location", "/account"),
                                      ("Set-Cookie", "sessionid=fixture-not-a-secret; Path=/; HttpOnly")])
        else:
            self.send_body(200, b"received %d bytes\n" % len(data))

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY

python3 "$work/server.py" "$port" &
server_pid=$!
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$port/probe" && break
    sleep 0.1
done

# Requests, sent in the same order for both captures.
drive() {
    local base="http://127.0.0.1:$port"
    # One keep-alive connection: several requests in sequence.
    curl -s -o /dev/null -o /dev/null -o /dev/null -o /dev/null \
        "$base/account?tab=1" "$base/chunked" "$base/empty" "$base/missing"
    # HEAD (Content-Length but no body).
    curl -s -I -o /dev/null "$base/account"
    # Login form post answered with a redirect and a cookie.
    curl -s -o /dev/null -d "user=alice&password=fixture" "$base/login"
    # Large upload with Expect: 100-continue.
    head -c 70000 /dev/zero | tr '\0' 'a' >"$work/upload"
    curl -s -o /dev/null -H "Expect: 100-continue" --data-binary "@$work/upload" "$base/upload"
    # Chunked upload.
    printf 'chunked upload body' | curl -s -o /dev/null -H "Transfer-Encoding: chunked" \
        --data-binary @- "$base/upload-chunked"
    # Response delimited by connection close.
    curl -s -o /dev/null "$base/old"
}

# tcpdump writes classic pcap on lo (Ethernet link type)...
capture_pcap() {
    tcpdump -U --immediate-mode -s 262144 -i lo -w "$1" "tcp port $port" 2>"$work/capture.log" &
    dump_pid=$!
    wait_listening
    drive
    stop_capture
}

# ...dumpcap writes pcapng; on "any" with Linux cooked v2 framing.
capture_pcapng() {
    dumpcap -q -i any -y LINUX_SLL2 -s 262144 -f "tcp port $port" -w "$1" 2>"$work/capture.log" &
    dump_pid=$!
    wait_listening
    drive
    stop_capture
}

wait_listening() {
    for _ in $(seq 100); do
        grep -qi "listening on\|capturing on" "$work/capture.log" 2>/dev/null && return
        sleep 0.1
    done
    sleep 1
}

stop_capture() {
    sleep 1
    kill -INT "$dump_pid"
    wait "$dump_pid" || true
    dump_pid=
    cat "$work/capture.log" >&2
}

capture_pcap "$work/h1-python.pcap"
capture_pcapng "$work/h1-python.pcapng"
cp "$work/h1-python.pcap" "$work/h1-python.pcapng" "$out_dir/"
echo "wrote $out_dir/h1-python.pcap and $out_dir/h1-python.pcapng (server port $port)"
