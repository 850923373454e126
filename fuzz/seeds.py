#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/seed-*).

Seeds are small, valid-looking inputs in each target's input format, so that
libFuzzer starts from deep inside the parsers instead of rediscovering HTTP
from nothing. Run from the repository root: `python3 fuzz/seeds.py`.
Inputs libFuzzer discovers later are added next to them by `cargo xtask fuzz`.
"""
import os
import shutil
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- stream scripts (see fuzz/src/lib.rs `run_stream_script`) ------------------
def data_op(conn, to_server, payload):
    """Data on `conn`, u16 length form."""
    kind = 0 if to_server else 2
    out = b""
    while True:
        chunk, payload = payload[:0xFFFF], payload[0xFFFF:]
        out += bytes([0x80 | kind << 2 | conn]) + struct.pack("<H", len(chunk)) + chunk
        if not payload:
            return out


def split_op(conn, to_server, payload, every):
    """Data cut into `every`-byte events (short length form)."""
    kind = 0 if to_server else 2
    out = b""
    for i in range(0, len(payload), every):
        chunk = payload[i : i + every]
        out += bytes([kind << 2 | conn, len(chunk)]) + chunk
    return out


def gap_op(conn, to_server, n):
    return bytes([(4 if to_server else 5) << 2 | conn, n - 1])


def close_op(conn):
    return bytes([6 << 2 | conn])


LOGIN_REQ = (
    b"POST /login HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) "
    b"Firefox/128.0\r\nCookie: sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 27\r\n\r\n"
    b"user=alice&password=secret1"
)
LOGIN_RESP = (
    b"HTTP/1.1 302 Found\r\nLocation: /account\r\nSet-Cookie: sessionid=c9f0f895fb98ab9159f51fd0297e236d; "
    b"Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=3600\r\nContent-Length: 0\r\n\r\n"
)
CHUNKED_RESP = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: JSESSIONID=ABCDEF0123456789; Path=/app\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nTrailer: x\r\n\r\n"
)
GET_REQ = b"GET /account?tab=orders HTTP/1.1\r\nHost: shop.example\r\nCookie: sessionid=c9f0f895fb98ab9159f51fd0297e236d\r\n\r\n"
HEAD_REQ = b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OLD = b"GET / HTTP/1.0\r\nHost: b\r\n\r\n"
OLD_RESP = b"HTTP/1.0 200 OK\r\nX-Folded: a\r\n b\r\n\r\nbody until close"
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: h2c.example\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
)
UPGRADE_RESP = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"


def h1_seeds():
    write("h1", "login", b"\x00" + data_op(0, True, LOGIN_REQ) + data_op(0, False, LOGIN_RESP) + close_op(0))
    write(
        "h1",
        "pipelined-split",
        b"\x01"
        + split_op(1, True, GET_REQ + HEAD_REQ + GET_REQ, 7)
        + split_op(1, False, CHUNKED_RESP + HEAD_RESP + LOGIN_RESP, 5),
    )
    write("h1", "continue", b"\x00" + data_op(2, True, LOGIN_REQ) + data_op(2, False, CONTINUE))
    write("h1", "http10-close", b"\x00" + data_op(0, True, OLD) + data_op(0, False, OLD_RESP) + close_op(0))
    write(
        "h1",
        "gap-resync",
        b"\x01" + data_op(3, True, GET_REQ[:20]) + gap_op(3, True, 40) + data_op(3, True, GET_REQ)
        + data_op(3, False, LOGIN_RESP[:30]) + gap_op(3, False, 200) + data_op(3, False, LOGIN_RESP),
    )
    write(
        "h1",
        "h2c-upgrade",
        b"\x00" + data_op(0, True, UPGRADE) + data_op(0, False, UPGRADE_RESP + frame(4, 0, 0, b""))
        + data_op(0, True, H2_PREFACE + frame(4, 0, 0, b"") + frame(4, 1, 0, b"")),
    )
    write("h1", "h2-preface", b"\x00" + data_op(1, True, H2_PREFACE + frame(4, 0, 0, b"") + headers_req(1)))


# --- HTTP/2 ------------------------------------------------------------------
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def lit(name, value, indexing=True):
    """Literal header field with a new name, no Huffman."""
    return bytes([0x40 if indexing else 0x00, len(name)]) + name + bytes([len(value)]) + value


def headers_req(stream, cookie=b"sessionid=8f14e45fceea167a5a36dedd4bea2543"):
    # :method GET (2), :scheme https (7), :path / (4), :authority literal (idx 1)
    block = b"\x82\x87\x84" + b"\x41" + bytes([len(b"shop.example")]) + b"shop.example"
    block += lit(b"cookie", cookie) + lit(b"user-agent", b"curl/8.5.0", False)
    return frame(1, 0x05, stream, block)  # END_STREAM | END_HEADERS


def headers_resp(stream, set_cookie):
    block = b"\x88" + lit(b"set-cookie", set_cookie)  # :status 200
    return frame(1, 0x04, stream, block)


# RFC 7541 Appendix C.4 (requests with Huffman) and C.3 (without).
C3 = [
    bytes.fromhex("828684410f7777772e6578616d706c652e636f6d"),
    bytes.fromhex("828684be58086e6f2d6361636865"),
    bytes.fromhex("828785bf400a637573746f6d2d6b65790c637573746f6d2d76616c7565"),
]
C4 = [
    bytes.fromhex("828684418cf1e3c2e5f23a6ba0ab90f4ff"),
    bytes.fromhex("828684be5886a8eb10649cbf"),
    bytes.fromhex("828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf"),
]


def h2_seeds():
    settings = frame(4, 0, 0, struct.pack(">HI", 1, 4096) + struct.pack(">HI", 3, 100))
    ack = frame(4, 1, 0, b"")
    client = settings + headers_req(1) + frame(8, 0, 0, struct.pack(">I", 65535))
    server = settings + ack + headers_resp(1, b"sessionid=c9f0f895fb98ab9159f51fd0297e236d; Path=/; Secure; HttpOnly")
    server += frame(0, 0x09, 1, b"\x03hello\x00\x00\x00")  # DATA, PADDED|END_STREAM
    write("h2", "exchange", b"\x00" + data_op(0, True, client) + data_op(0, False, server))
    # Header block split over HEADERS + CONTINUATION, RST_STREAM, PING, GOAWAY.
    block = b"\x82\x87\x84" + lit(b"cookie", b"a=1") + lit(b"cookie", b"b=2")
    split = frame(1, 0x01, 3, block[:5]) + frame(9, 0x04, 3, block[5:])
    tail = frame(3, 0, 3, struct.pack(">I", 8)) + frame(6, 0, 0, b"12345678") + frame(7, 0, 0, struct.pack(">II", 3, 0))
    write("h2", "continuation", b"\x01" + split_op(1, True, settings + split + tail, 9) + data_op(1, False, settings))
    # Huffman blocks of RFC 7541 C.4 on consecutive streams (dynamic table).
    c4 = b"".join(frame(1, 0x05, 2 * i + 1, b) for i, b in enumerate(C4))
    write("h2", "hpack-c4", b"\x00" + data_op(2, True, settings + c4) + data_op(2, False, settings + ack))
    # Priority flag, padded HEADERS.
    pri = frame(1, 0x2D, 5, b"\x02" + struct.pack(">IB", 0, 15) + C3[0] + b"\x00\x00")
    write("h2", "padded-priority", b"\x00" + data_op(3, True, settings + pri) + gap_op(3, False, 9))


def hpack_seeds():
    write("hpack", "c3", b"\x40" + b"".join(bytes([len(b)]) + b for b in C3))
    write("hpack", "c4", b"\x40" + b"".join(bytes([len(b)]) + b for b in C4))
    resize = b"\x3f\xe1\x1f"  # size update to 4096
    write("hpack", "resize", b"\x40" + bytes([len(resize + C3[0])]) + resize + C3[0] + b"\xff\x02" + bytes([len(C3[1])]) + C3[1])


def cookie_seeds():
    pairs = [
        (b"sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark; __Host-id=\"q\"",
         b"sessionid=c9f0f895fb98ab9159f51fd0297e236d; Path=/; Domain=.example.com; Secure; HttpOnly; SameSite=Lax; Max-Age=3600"),
        (b"JSESSIONID=ABCDEF0123456789;;  nameless ; a=b=c",
         b"JSESSIONID=deleted; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/app"),
        (b"connect.sid=s%3Aabc.def",
         b"__Secure-sid=xyz; Expires=Wed, 21-Oct-2015 07:28:00 GMT; SameSite=None; Partitioned; Priority=High"),
        (b"PHPSESSID=\"quoted\"", b"laravel_session=eyJpdiI6; expires=Sun, 06 Nov 1994 08:49:37 GMT; max-age=-1; path"),
    ]
    for i, (c, sc) in enumerate(pairs):
        write("cookie", str(i), bytes([len(c)]) + c + sc)


def pcap_seeds():
    fixtures = os.path.join(ROOT, "tests", "fixtures", "pcap")
    for name in ["login_fixation.pcap", "hijack_ip_and_ua.pcap", "cookie_prefix_violation.pcap",
                 "session_id_in_url_query.pcap", "logout_invalidated.pcap", "client_side_jwt.pcap"]:
        p = os.path.join(fixtures, name)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(CORPUS, "pcap", "seed-" + name))
    adv = os.path.join(ROOT, "agent", "streams", "tests", "data", "adversarial")
    for name in sorted(os.listdir(adv)):
        shutil.copy(os.path.join(adv, name), os.path.join(CORPUS, "pcap", "seed-" + name))


def config_seeds():
    for src, name in [("agent/src/default-config.toml", "default.toml"),
                      ("tests/fixtures/sessionwatch-test.toml", "fixtures.toml")]:
        p = os.path.join(ROOT, src)
        if os.path.exists(p):
            shutil.copy(p, os.path.join(CORPUS, "config", "seed-" + name))
    write("config", "services.toml", b"""
[sessions]
cookie_names = ["sessionid", "JSESSIONID"]
max_sessions = 10

[policy]
idle_timeout = "15m"
absolute_timeout = "8h"

[network]
trusted_proxies = ["10.0.0.0/8", "::1/128"]

[[services]]
name = "shop"
hosts = ["shop.example", "*.shop.example"]

[routes]
login = ["POST /login", "/auth/*"]
logout = ["/logout"]
""")


if __name__ == "__main__":
    for t in ["h1", "h2", "hpack", "cookie", "pcap", "config"]:
        os.makedirs(os.path.join(CORPUS, t), exist_ok=True)
    h1_seeds()
    h2_seeds()
    hpack_seeds()
    cookie_seeds()
    pcap_seeds()
    config_seeds()
