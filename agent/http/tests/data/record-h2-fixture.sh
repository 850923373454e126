#!/usr/bin/env bash
# Records the real-traffic HTTP/2 fixture used by agent/http/tests/h2.rs:
#
#   h2-nginx.pcap   tcpdump on lo (Ethernet link type) while curl (nghttp2) talks h2c
#                   with prior knowledge to nginx (`listen ... http2;` on a plain port):
#                   a request with a cookie, a 404, a 40 kB response body (DATA frames
#                   skipped), a login POST answered with two Set-Cookie fields, and a
#                   request with two `Cookie` fields (crumbs, joined by the parser).
#
# Needs root, tcpdump, nginx (with the http_v2 module, e.g. nginx-light), curl with HTTP/2.
# Only loopback traffic is generated. Usage: record-h2-fixture.sh [OUTPUT_DIR]
set -euo pipefail


out_dir=$(cd "${1:-$(dirname "$0")}" && pwd)
work=$(mktemp -d)
cleanup() {
    [[ -n "${dump_pid:-}" ]] && kill "$dump_pid" 2>/dev/null || true
    [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
mkdir -p "$work/html" "$work/tmp"
head -c 40000 /dev/zero | tr '\0' 'b' >"$work/html/big.bin"
chmod 755 "$work" "$work/html"; chmod 644 "$work/html/big.bin"   # read by the nginx worker user

cat >"$work/nginx.conf" <<NGINX
daemon on;
pid $work/nginx.pid;
error_log $work/error.log;
worker_processes 1;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/tmp;
    proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp;
    uwsgi_temp_path $work/tmp;
    scgi_temp_path $work/tmp;
    server {
        listen 127.0.0.1:$port http2;
        root $work/html;
        location = /account { return 200 "account page\n"; }
        location = /login {
            add_header Set-Cookie "sessionid=fixture-h2-not-a-secret; Path=/; HttpOnly" always;
            add_header Set-Cookie "csrftoken=fixture-csrf; Path=/" always;
            return 302 /account;
        }
        location = /big.bin { }
        location / { return 404; }
    }
}
NGINX
nginx -c "$work/nginx.conf"
for _ in $(seq 50); do
    curl -s --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$port/probe" && break
    sleep 0.1
done

tcpdump -U --immediate-mode -s 262144 -i lo -w "$work/h2-nginx.pcap" "tcp port $port" 2>"$work/capture.log" &
dump_pid=$!
for _ in $(seq 100); do
    grep -qi "listening on" "$work/capture.log" 2>/dev/null && break
    sleep 0.1
done

base="http://127.0.0.1:$port"
# One connection per request: curl 7.88 fails ("Error in the HTTP2 framing layer")
# when it reuses an h2c prior-knowledge connection for a second transfer.
h2() { curl -sS --http2-prior-knowledge -o /dev/null "$@"; }
h2 -H "Cookie: sessionid=fixture-h2-not-a-secret; theme=dark" "$base/account?tab=1"
h2 "$base/missing"
h2 "$base/big.bin"
# Login answered with a redirect and two Set-Cookie fields.
h2 -d "user=alice&password=fixture" "$base/login"
# Two Cookie header lines: sent as separate `cookie` fields, joined by the parser.
h2 -H "Cookie: a=1" -H "Cookie: b=2" "$base/account"

sleep 1
kill -INT "$dump_pid"
wait "$dump_pid" || true
dump_pid=
cat "$work/capture.log" >&2
cp "$work/h2-nginx.pcap" "$out_dir/"
echo "wrote $out_dir/h2-nginx.pcap (server port $port)"
