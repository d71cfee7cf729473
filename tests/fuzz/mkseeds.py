#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into tests/fuzz/corpus/.

The seeds are small, valid (or nearly valid) inputs that get each target
past its first checks: configurations from the docs, registry lines,
NETCONF sessions in both framings, gRPC frames, protobuf messages, and
whole HTTP/2 conversations for both sides of a gRPC connection (HPACK
literals, no Huffman coding, so that they stay readable in a hex dump).

Deterministic: running it again rewrites the same files.  Run it after
changing a target's input format:

    tests/fuzz/mkseeds.py
"""

import base64
import hashlib
import os
import shutil
import struct
import sys

TOP = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(TOP, "corpus")


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- protobuf (proto3 wire format) ---

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_varint(field, v):
    return varint(field << 3) + varint(v)


def pb_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


INIT_REQ = pb_varint(1, 42) + pb_bytes(2, "router-17") + pb_bytes(3, "s3cret")
INIT_RESP = pb_varint(1, 1)
STATUS_REQ = b""
STATUS_RESP = pb_varint(1, 1)
CMD_REQ = pb_bytes(1, "<rpc-reply/>]]>]]>")
CMD_RESP_NC = pb_bytes(1, "<rpc><get-config/></rpc>]]>]]>")
CMD_RESP_CSH = pb_bytes(2, "show version\n") + pb_varint(3, 0)
CMD_RESP_KILL = pb_varint(3, 9)


def grpc_msg(payload):
    return b"\x00" + struct.pack(">I", len(payload)) + payload


# --- HTTP/2 ---

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST, SETTINGS, PUSH, PING, GOAWAY, WINUP, CONT = \
    range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 1, 1, 4, 8, 0x20


def frame(ftype, flags, stream, payload=b""):
    return (struct.pack(">I", len(payload))[1:] +
            bytes([ftype, flags]) + struct.pack(">I", stream) + payload)


def hpack_int(v, prefix_bits, first):
    limit = (1 << prefix_bits) - 1
    if v < limit:
        return bytes([first | v])
    out = bytearray([first | limit])
    v -= limit
    while v >= 128:
        out.append(v & 0x7F | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def hpack_str(s):
    if isinstance(s, str):
        s = s.encode()
    return hpack_int(len(s), 7, 0) + s


def hpack(headers, index=False):
    """Literal fields with a new name, without (or with) indexing."""
    out = b""
    for k, v in headers:
        out += (b"\x40" if index else b"\x00") + hpack_str(k) + hpack_str(v)
    return out


def settings(pairs=()):
    return frame(SETTINGS, 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


SETTINGS_ACK = frame(SETTINGS, ACK, 0)
SVC = "/jnx.jet.netconf.Ncgrpc/"


def request(path, extra=(), method="POST", ctype="application/grpc"):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", "nms.example:443"), ("content-type", ctype),
            ("te", "trailers")] + list(extra)


def server_seeds():
    """What a client sends to the server (fuzz_h2_server)."""
    head = PREFACE + settings([(4, 65535)])
    md = [("client-id", "r1"), ("x-trace-bin", "3q0AvsA"),
          ("grpc-timeout", "30S"), ("user-agent", "grpc-c/1.51")]
    seeds = {}
    seeds["initialize"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcInitialize", md))) +
        frame(DATA, END_STREAM, 1, grpc_msg(INIT_REQ)) + SETTINGS_ACK)
    seeds["command_get"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcCommandGet"), index=True)) +
        frame(DATA, 0, 1, grpc_msg(CMD_REQ)) +
        frame(DATA, 0, 1, grpc_msg(b"ab")) +
        frame(WINUP, 0, 0, struct.pack(">I", 1 << 20)) +
        frame(WINUP, 0, 1, struct.pack(">I", 1 << 16)) +
        frame(DATA, 0, 1, grpc_msg(b"F")) +
        frame(DATA, END_STREAM, 1, b""))
    # A reply larger than the windows: flow control and on_writable.
    seeds["big_reply"] = (
        PREFACE + settings([(4, 1000)]) +
        frame(HEADERS, END_HEADERS, 1,
              hpack(request(SVC + "NcgrpcCommandGet"))) +
        frame(DATA, 0, 1, grpc_msg(b"BIG")) +
        frame(WINUP, 0, 1, struct.pack(">I", 1 << 30)) +
        frame(WINUP, 0, 0, struct.pack(">I", 1 << 30)) +
        frame(DATA, END_STREAM, 1, grpc_msg(b"tail")))
    seeds["status_get"] = (
        head + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                     hpack(request(SVC + "NcgrpcServerStatusGet"))))
    seeds["status_get_body"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcServerStatusGet"))) +
        frame(DATA, END_STREAM, 1, grpc_msg(STATUS_REQ)))
    seeds["cancel"] = (
        head + frame(HEADERS, END_HEADERS, 1, hpack(request("/f/Cancel"))) +
        frame(DATA, 0, 1, grpc_msg(b"x")) +
        frame(DATA, END_STREAM, 3, grpc_msg(b"late")))
    seeds["unknown_method"] = (
        head + frame(HEADERS, END_HEADERS, 1, hpack(request("/no/Such"))) +
        frame(DATA, END_STREAM, 1, grpc_msg(b"")))
    seeds["not_grpc"] = (
        head + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                     hpack(request("/", method="GET", ctype="text/html"))) +
        frame(HEADERS, END_HEADERS | END_STREAM, 3,
                     hpack(request(SVC + "NcgrpcInitialize",
                                   ctype="application/grpc+proto"))))
    # Three streams at once; a reset, a ping, a goaway.
    seeds["streams"] = (
        head +
        frame(HEADERS, END_HEADERS, 1, hpack(request(SVC + "NcgrpcCommandGet"))) +
        frame(HEADERS, END_HEADERS, 3, hpack(request(SVC + "NcgrpcInitialize"))) +
        frame(HEADERS, END_HEADERS, 5, hpack(request("/f/Cancel"))) +
        frame(DATA, 0, 1, grpc_msg(b"odd")) +
        frame(RST, 0, 3, struct.pack(">I", 8)) +
        frame(PING, 0, 0, b"12345678") +
        frame(DATA, 0, 5, grpc_msg(b"zz")) +
        frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 16)) +
        frame(GOAWAY, 0, 0, struct.pack(">II", 5, 0) + b"bye") +
        frame(DATA, END_STREAM, 1, grpc_msg(b"last")))
    # A message split across frames, then framing errors.
    msg = grpc_msg(b"0123456789" * 10)
    seeds["split_message"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcCommandGet"))) +
        frame(DATA, 0, 1, msg[:3]) + frame(DATA, 0, 1, msg[3:50]) +
        frame(DATA, PADDED, 1, b"\x04" + msg[50:] + b"\0\0\0\0") +
        frame(DATA, END_STREAM, 1, b"\x00\x00\x00"))
    seeds["compressed"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcInitialize"))) +
        frame(DATA, END_STREAM, 1, b"\x01\x00\x00\x00\x01x"))
    seeds["too_big"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(request(SVC + "NcgrpcInitialize"))) +
        frame(DATA, 0, 1, b"\x00\x7f\xff\xff\xff" + b"y" * 100))
    # Trailers from the client, and headers over CONTINUATION.
    block = hpack(request(SVC + "NcgrpcCommandGet", md))
    seeds["continuation"] = (
        head + frame(HEADERS, 0, 1, block[:20]) +
        frame(CONT, 0, 1, block[20:40]) +
        frame(CONT, END_HEADERS, 1, block[40:]) +
        frame(DATA, 0, 1, grpc_msg(b"a")) +
        frame(HEADERS, END_HEADERS | END_STREAM, 1,
              hpack([("x-trailer", "t")])))
    seeds["priority_padded"] = (
        head + frame(HEADERS, END_HEADERS | PADDED | PRIO, 1,
                     b"\x02" + struct.pack(">IB", 0, 200) +
                     hpack(request(SVC + "NcgrpcInitialize")) + b"\0\0") +
        frame(DATA, END_STREAM, 1, grpc_msg(INIT_REQ)))
    seeds["bad_metadata"] = (
        head + frame(HEADERS, END_HEADERS, 1, hpack(request(
            SVC + "NcgrpcInitialize",
            [("grpc-timeout", "99999999H"), ("bad-bin", "!!!"),
             ("Upper", "x"), ("x-ctl", "a\x7fb"), ("x-empty-bin", ""),
             ("grpc-timeout", "1n")]))) +
        frame(DATA, END_STREAM, 1, grpc_msg(INIT_REQ)))
    for name, body in seeds.items():
        write("h2_server", name, b"\x00" + body)
    # The same conversations read a byte, or 49 bytes, at a time.
    write("h2_server", "initialize_bytewise", b"\x05" + seeds["initialize"])
    write("h2_server", "command_get_49", b"\x1e" + seeds["command_get"])
    write("h2_server", "streams_shutdown", b"\x01" + seeds["streams"])


def client_seeds():
    """What a server sends to the client (fuzz_h2_client)."""
    head = settings([(3, 100), (4, 1 << 20), (6, 16384)]) + SETTINGS_ACK
    ok = [(":status", "200"), ("content-type", "application/grpc")]
    seeds = {}
    seeds["initialize_ok"] = (
        head + frame(HEADERS, END_HEADERS, 1,
                     hpack(ok + [("x-session-bin", "AAE")])) +
        frame(DATA, 0, 1, grpc_msg(INIT_RESP)) +
        frame(HEADERS, END_HEADERS | END_STREAM, 1,
              hpack([("grpc-status", "0"), ("grpc-message", "ok%20%C3%A9"),
                     ("x-t", "v")])))
    seeds["command_get"] = (
        head + frame(HEADERS, END_HEADERS, 3, hpack(ok, index=True)) +
        frame(DATA, 0, 3, grpc_msg(CMD_RESP_NC)) +
        frame(DATA, 0, 3, grpc_msg(CMD_RESP_CSH)) +
        frame(WINUP, 0, 3, struct.pack(">I", 4096)) +
        frame(DATA, 0, 3, grpc_msg(CMD_RESP_KILL)) +
        frame(HEADERS, END_HEADERS | END_STREAM, 3,
              hpack([("grpc-status", "13"),
                     ("grpc-message", "bad%0Athing%")])))
    # A small window for the client's 4 KiB message, opened bit by bit.
    seeds["small_window"] = (
        settings([(4, 100)]) + SETTINGS_ACK +
        frame(WINUP, 0, 3, struct.pack(">I", 1000)) +
        frame(WINUP, 0, 3, struct.pack(">I", 5000)) +
        frame(HEADERS, END_HEADERS, 3, hpack(ok)) +
        frame(DATA, 0, 3, grpc_msg(b"ab")) +
        frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 70000)))
    seeds["trailers_only"] = (
        head + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                     hpack(ok + [("grpc-status", "16"),
                                 ("grpc-message", "unknown device")])) +
        frame(RST, 0, 3, struct.pack(">I", 7)))
    seeds["http_error"] = (
        head + frame(HEADERS, END_HEADERS | END_STREAM, 1,
                     hpack([(":status", "503"),
                            ("content-type", "text/plain")])) +
        frame(HEADERS, END_HEADERS, 3, hpack([(":status", "200"),
                                              ("content-type", "text/html")])))
    seeds["goaway_pings"] = (
        head + frame(PING, 0, 0, b"abcdefgh") +
        frame(GOAWAY, 0, 0, struct.pack(">II", 3, 11) + b"too_many_pings"))
    seeds["no_trailers"] = (
        head + frame(HEADERS, END_HEADERS, 1, hpack(ok)) +
        frame(DATA, END_STREAM, 1, grpc_msg(INIT_RESP)) +
        frame(HEADERS, END_HEADERS, 3, hpack(ok)) +
        frame(DATA, 0, 3, grpc_msg(b"x")[:4]) +
        frame(DATA, END_STREAM, 3, b""))
    seeds["push_promise"] = (
        head + frame(PUSH, END_HEADERS, 1, struct.pack(">I", 2) + hpack(ok)))
    seeds["continuation"] = (
        head + frame(HEADERS, 0, 1, hpack(ok)[:10]) +
        frame(CONT, END_HEADERS, 1, hpack(ok)[10:]) +
        frame(DATA, 0, 1, grpc_msg(b"\x08\x01")) +
        frame(HEADERS, END_HEADERS | END_STREAM, 1,
              hpack([("grpc-status", "0"), ("grpc-status", "1x")])))
    for name, body in seeds.items():
        write("h2_client", name, b"\x00" + body)
    write("h2_client", "command_get_eof", b"\x01" + seeds["command_get"])
    write("h2_client", "initialize_bytewise", b"\x06" + seeds["initialize_ok"])
    write("h2_client", "goaway_graceful", b"\x02" + seeds["goaway_pings"])


# --- the parsers ---

CERT = """-----BEGIN CERTIFICATE-----
MIIBczCCARmgAwIBAgIUPY5hD93u+0BgQAdZeXjeKX3FRFQwCgYIKoZIzj0EAwIw
DjEMMAoGA1UEAwwDbm1zMCAXDTI2MTIwNDE4NDkyMFoYDzIxMjYxMTEwMTg0OTIw
WjAOMQwwCgYDVQQDDANubXMwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARFHa9P
sQr1PRhuMQ+q/WbgQD8/Hxuo+H1ybFTiUdtHPZ5bL6x3vx0Tpeg28wqvZXoQFvJd
Y/kP6n5m2SbFQfYVo1MwUTAdBgNVHQ4EFgQUjucTP5ywrP04Ss9KkApY1o34hS0w
HwYDVR0jBBgwFoAUjucTP5ywrP04Ss9KkApY1o34hS0wDwYDVR0TAQH/BAUwAwEB
/zAKBggqhkjOPQQDAgNIADBFAiBDAGZmw1Afxj01PBqvyc+X6QO4WLtGFX3g3cKY
TmoZVwIhAJ2Di1qRzwRlc2bxVCgAmPc+lAsQ3nxCbE8X2aGfyK8u
-----END CERTIFICATE-----"""


def conf_seeds():
    cert = CERT.replace("\n", "\\n")
    write("conf", "full", """/* Written by hand. */
agent {
    user netconf;
    netconf-command "/usr/sbin/netconf-subsystem";
    shell /bin/sh;
    log-file /var/log/outbound_https.log;
    keepalive-interval 360;
    keepalive-timeout 20;
    tcp-keepalive-idle 60;
    tcp-keepalive-interval 15;
    tcp-keepalive-count 4;
}
outbound-https {
    client nms1 {
        device-id router-17;
        secret "$9$41JDk5T3CpBFnCuB1rl8X7-VYq.5"; ## SECRET-DATA
        reconnect-strategy in-order;
        waittime 30;
        address 198.51.100.7 {
            port 443;
            trusted-cert "%s";
        }
        address nms-backup.example.net {
            port 8443;
            trusted-cert-file "/etc/ncgrpc/nms-backup.pem";
        }
    }
    client nms2 {
        device-id "r 2";
        secret plain;
        reconnect-strategy sticky;
        address 2001:db8::1 { trusted-cert-file /etc/x.pem; }
    }
}
""" % cert)
    write("conf", "junos_wrapped", """## Last commit: 2024-01-01 by admin
system {
    services {
        outbound-https {
            client c {
                device-id d;
                secret "$9$LbHX-wg4Z";
                inactive: waittime 5;
                address [::1] { trusted-cert-file /a; }
            }
        }
    }
}
""")
    write("conf", "errors", 'agent { bogus 1; }\noutbound-https { client x '
          '{ waittime 99999999999; secret "\\q"; address a { port 0; } } }')


def sconf_seeds():
    write("sconf", "full", """# /etc/ncgrpc/ncgrpcd.conf
listen [::]:443
listen *:8443
listen 192.0.2.1:9000
certificate /etc/ncgrpc/server.crt
key "/etc/ncgrpc/my key.pem"
devices /etc/ncgrpc/devices
operator-socket /run/ncgrpc/operator.sock
operator-socket-mode 0660
operator-socket-group ncgrpc
log-file -
audit-log /var/log/ncgrpc/audit.log
name nms.example.net
name 192.0.2.10
session-limit 32
session-wait 10
max-streams 100
keepalive-interval 0
tcp-keepalive 60
handshake-timeout 10
listen=[::1]:1
""")
    write("sconf", "crlf_quotes", 'name "a \\" b"\r\nsession-limit 0\r\n'
          'max-streams 99999999999\r\nlisten host.example:0\r\n'
          'log-file relative\r\nsession-wait=5')


def scrypt_line(dev, secret, salt, ln=10, r=1, p=1):
    h = hashlib.scrypt(secret.encode(), salt=salt, n=1 << ln, r=r, p=p,
                       dklen=32, maxmem=64 << 20)
    b = lambda x: base64.b64encode(x).decode().rstrip("=")
    return "%s $scrypt$ln=%d,r=%d,p=%d$%s$%s" % (dev, ln, r, p, b(salt),
                                                 b(h))


def registry_seeds():
    salt = bytes(range(16))
    write("registry", "devices",
          "# ncgrpcd devices\n\n" +
          scrypt_line("router-17", "s3cret", salt) + "\r\n" +
          "\t" + scrypt_line("a.b_c:d@e-F9", "x", salt[::-1], 11, 2, 1) +
          "   # comment\n" +
          scrypt_line("r2", "y", bytes(32), 10, 1, 2) + "\n")
    write("registry", "bad", "r1 $scrypt$ln=99,r=1,p=1$AAAA$BBBB\n")


NC_HELLO10 = ('<?xml version="1.0" encoding="UTF-8"?>\n'
              '<hello xmlns="urn:ietf:params:xml:ns:netconf:base:1.0">'
              '<capabilities><capability>urn:ietf:params:netconf:base:1.0'
              '</capability></capabilities></hello>]]>]]>')
NC_HELLO11 = NC_HELLO10.replace(
    "</capabilities>",
    "<capability>urn:ietf:params:netconf:base:1.1</capability>"
    "</capabilities>")


def chunked(msg):
    return "\n#%d\n%s\n##\n" % (len(msg.encode()), msg)


def ncframe_seeds():
    rpc = ('<rpc message-id="1" xmlns="urn:ietf:params:xml:ns:netconf:'
           'base:1.0"><get-config><source><running/></source></get-config>'
           '</rpc>')
    rpc2 = ('<!-- c --><?pi x?><nc:rpc xmlns:nc="x" message-id="2">'
            '<![CDATA[x]]><nc:commit/></nc:rpc>')
    # byte 0: device hello kind, byte 1: read size, byte 2: reads before
    # the device's hello, byte 3: length of the device part (kind 3).
    eom = NC_HELLO10 + rpc + "]]>]]>\n" + rpc2 + "]]>]]>"
    write("ncframe", "eom", b"\x01\x00\x01\x00" + eom.encode())
    write("ncframe", "eom_bytewise", b"\x01\x01\x05\x00" + eom.encode())
    ch = NC_HELLO11 + chunked(rpc) + "\n#3\nabc\n#2\nde\n##\n" + chunked(rpc2)
    write("ncframe", "chunked", b"\x02\x00\x01\x00" + ch.encode())
    write("ncframe", "chunked_17", b"\x02\x11\x03\x00" + ch.encode())
    dev = NC_HELLO11.encode()
    write("ncframe", "device_from_input",
          bytes([3, 0, 1, len(dev)]) + ch.encode() + dev)
    write("ncframe", "chunked_errors", b"\x06\x00\x01\x00" +
          (NC_HELLO11 + "\n#0\n\n#99999999999\nx\n##\n").encode())
    write("ncframe", "no_device", b"\x00\x07\x00\x00" + eom.encode())


def grpc_frame_seeds():
    write("grpc_frame", "messages", b"\x06\x00" + grpc_msg(INIT_REQ) +
          grpc_msg(b"") + grpc_msg(b"x" * 300) + b"\x00\x00")
    write("grpc_frame", "small_pieces", b"\x03\x03" + grpc_msg(b"abc") * 3)
    write("grpc_frame", "errors", b"\x02\x00" + grpc_msg(b"z" * 100) +
          b"\x01\x00\x00\x00\x00")


def grpc_meta_seeds():
    for i, v in enumerate(["1S", "100m", "99999999H", "5u", "3n", "1M",
                           "%41b%zz%", "ok%20%C3%A9", "AAECAw==", "3q0AvsA",
                           "x-trace-bin", "grpc-timeout", "16", "a\x7f",
                           "AAE=x"]):
        write("grpc_meta", "value%02d" % i, v)


def junos9_seeds():
    for i, v in enumerate(["$9$LbHX-wg4Z", "$9$41JDk5T3CpBFnCuB1rl8X7-VYq.5",
                           "$9$FNkC3/t1IcevLuOWx", "$9$o1aGiPfz/Cuk.tO",
                           "$9$i.5z", "netscreen"]):
        write("junos9", "s%d" % i, v)


def proto_seeds():
    # byte 0 picks the type, in the order of fz_types[] in fuzz_proto.c.
    msgs = [STATUS_REQ, STATUS_RESP, INIT_REQ, INIT_RESP, CMD_REQ,
            CMD_RESP_CSH, CMD_REQ, CMD_RESP_NC]
    device = (pb_bytes(1, "r1") + pb_bytes(2, "192.0.2.1:40000") +
              pb_varint(3, 1700000000) + pb_varint(4, 42) + pb_varint(5, 1) +
              pb_varint(6, 0))
    msgs += [device, b"", pb_bytes(1, device) * 2, pb_varint(1, 1),
             pb_varint(1, 2) + pb_bytes(2, device) + pb_bytes(3, "why"),
             pb_bytes(1, "r1") + pb_varint(2, 1) + pb_varint(3, 500),
             pb_bytes(1, pb_bytes(1, "r1")) + pb_bytes(2, "<rpc/>") +
             pb_varint(3, 2),
             pb_bytes(1, "r1") + pb_varint(2, 0) + pb_bytes(3, "192.0.2.1:2") +
             pb_varint(4, 7),
             pb_bytes(1, "bye") + pb_varint(2, 10) + pb_varint(3, 20),
             pb_bytes(2, "out") + pb_bytes(3, pb_bytes(1, "x"))]
    window = pb_varint(1, 100) + pb_varint(2, 30)
    msgs += [window, window]
    for i, m in enumerate(msgs):
        write("proto", "m%02d" % i, bytes([i]) + m)
    # The raw-terminal extension: field 100 of the wire CommandGetResponse,
    # a raw SessionOpen, a window SessionInput.
    write("proto", "window", bytes([7]) + pb_bytes(100, window))
    write("proto", "rawopen", bytes([13]) + pb_bytes(1, "r1") + pb_varint(2, 1) +
          pb_varint(4, 1) + pb_bytes(5, window) + pb_bytes(16, "xterm"))
    write("proto", "rawinput", bytes([14]) + pb_bytes(4, window))


def termext_seeds():
    for i, v in enumerate(["100x30", "1x1", "4096x4096", "4097x1", "0x24", "80x",
                           "x24", "080x24", "99999x99999", "80X24", "xterm-256color",
                           "tmux-256color", "vt100", "x;y", ""]):
        write("termext", "v%02d" % i, v)


def prompt_seeds():
    for i, v in enumerate([
            b"\x00Password: ", b"\x03$ su -\r\nPassword: ", b"\x1f[sudo] password for alice: ",
            b"\x00\x1b[1;31mPassword:\x1b[0m ", b"\x05\x1b]0;title\x07PIN:",
            b"\x00" + b"x" * 400 + b" Password:", b"\x07Ping statistics:\r\n$ ",
            b"\x00Password:\x1b]0;never ended", b"\x01\r\r\n\n", b""]):
        write("prompt", "v%02d" % i, v)


def metrics_http_seeds():
    for i, v in enumerate([
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nAccept: text/plain\r\n\r\n",
            b"GET /metrics HTTP/1.0\n\n",
            b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /other HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n folded\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 8200 + b"\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n"]):
        write("metrics_http", "r%02d" % i, v)


def akeys_seeds():
    ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGiR0d1ZmhbISFcJKXA3wD/sa5zl8SsBc0SrS36rfmMa"
    ec = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD9zdqBLbXGOWyoOxNTTG/MGdVUL8UZ5PYAEXp5cpmqsj+xLulxBm3h8KW+l9UP5k3PpdlCU7YCJICZTfmHFv8E="
    write("akeys", "good", '# operators\n\noperator="alice",devices="router-*,lab-?" %s a@b\n'
          'operator="ci",devices="*",sessions="netconf,exec" %s\r\n' % (ed, ec))
    write("akeys", "user", 'operator="a.b",devices="r1" %s\nalice+router-17' % ed)
    write("akeys", "quoted", 'operator="x\\\\y",devices="a\\"b" %s\n' % ed)
    write("akeys", "bad", 'operator=alice %s\nno-pty %s\n' % (ed, ed))
    write("akeys", "twice", 'operator="a",devices="*" %s\noperator="b",devices="*" %s\n'
          % (ed, ed))


def ldisc_seeds():
    write("ldisc", "lines", b"ls -l\recho x\r\n\xffsleep 100\x03\x04")
    write("ldisc", "edit", b"ab\x7fc\x08\x15ok\x1b[A\x1bOB\xc3\xa9\x7f\r")
    write("ldisc", "long", b"x" * 5000 + b"\r")


def main():
    only = sys.argv[1:]
    gens = {
        "h2_server": server_seeds, "h2_client": client_seeds,
        "conf": conf_seeds, "sconf": sconf_seeds,
        "registry": registry_seeds, "ncframe": ncframe_seeds,
        "grpc_frame": grpc_frame_seeds, "grpc_meta": grpc_meta_seeds,
        "junos9": junos9_seeds, "proto": proto_seeds, "termext": termext_seeds,
        "prompt": prompt_seeds,
        "akeys": akeys_seeds, "ldisc": ldisc_seeds, "metrics_http": metrics_http_seeds,
    }
    for name, gen in gens.items():
        if only and name not in only:
            continue
        shutil.rmtree(os.path.join(CORPUS, name), ignore_errors=True)
        gen()


if __name__ == "__main__":
    main()
