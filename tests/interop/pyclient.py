#!/usr/bin/python3
"""grpcio twin of ncgrpc-testc; see docs/internals/testtools.md.

pyclient.py --connect HOST:PORT --ca FILE [--device-id ID] [--secret S]
            [--deadline MS] [--metadata K=V]... [--max-message BYTES]
            [--stub-dir DIR] COMMAND [ARGS]

COMMAND is status | initialize | echo COUNT SIZE | cancel-initialize MS |
send-status CODE TEXT | bench-stream SECONDS SIZE | bench-unary SECONDS.

--stub-dir (or $NCGRPC_STUB_DIR) is where the generated protobuf module is
cached; it is the only option ncgrpc-testc does not have.

Exit status: 0 success, 1 an RPC ended with a non-OK status, 2 no connection
(TLS failures included), 64 bad usage.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import argparse  # noqa: E402
import base64  # noqa: E402
import binascii  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ncgrpc_stubs  # noqa: E402

EX_OK, EX_RPC, EX_CONNECT, EX_USAGE = 0, 1, 2, 64
BENCH_IN_FLIGHT = 16

# Response metadata that is part of HTTP/2 or gRPC itself, never printed.
RESERVED_KEYS = {"content-type", "te", "user-agent", "date", "server",
                 "content-length", "accept-encoding", "host", "authority"}


class Fail(Exception):
    """Ends the run with an error line and an exit status."""

    def __init__(self, status, line):
        super().__init__(line)
        self.status = status
        self.line = line


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def custom_metadata(md):
    res = []
    for key, value in md or ():
        key = key.lower()
        if key.startswith(":") or key.startswith("grpc-") or key in RESERVED_KEYS:
            continue
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("latin-1")
            value = base64.b64encode(value).decode("ascii")
        res.append((key, value))
    res.sort(key=lambda kv: kv[0])
    return res


# ---------------------------------------------------------------------------
# Telling "no connection" (exit 2) from "the RPC failed" (exit 1).
#
# grpcio reports both as an RpcError.  A connection that never came up is
# UNAVAILABLE with "failed to connect to all addresses" (1.51) in its details;
# the TLS part of the story is only in the text of the last subchannel error,
# e.g. "Ssl handshake failed: SSL_ERROR_SSL: error:1000007d:SSL
# routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED" (BoringSSL gives no
# reason for the verify failure) or "Peer name localhost is not in peer
# certificate" (gRPC's own host name check, after the handshake).
# So: we recognise the handshake failure from grpcio's text, and when that
# text cannot tell the reason apart we ask the system OpenSSL, through the ssl
# module, for the verification result against the same address, CA file and
# host name (one extra TLS handshake, no HTTP/2), and word REASON from that.
# ---------------------------------------------------------------------------
# Texts of grpcio 1.51 for "the connection never came up".
CONNECT_MARKERS = ("failed to connect to all addresses", "dns resolution failed",
                   "connections to all backends failing")
# Texts that say the TLS handshake or gRPC's certificate checks failed.
TLS_MARKERS = ("ssl handshake failed", "handshake failed", "ssl_error_ssl",
               "certificate verify failed", "peer name", "not in peer certificate",
               "alpn", "tsi_", "security handshake")


def _error_text(err):
    parts = []
    for fn in ("details", "debug_error_string"):
        try:
            v = getattr(err, fn)()
        except Exception:  # noqa: BLE001  (cancelled futures raise on access)
            v = None
        if v:
            parts.append(str(v))
    return " | ".join(parts)


def tls_reason_from_text(text):
    low = text.lower()
    if "peer name" in low and "not in peer certificate" in low:
        return "name mismatch"
    if "certificate has expired" in low or "certificate_expired" in low or \
            "cert_has_expired" in low:
        return "expired"
    if "unknown_ca" in low or "unable to get local issuer" in low or \
            "self signed certificate" in low or "self-signed certificate" in low:
        return "unknown ca"
    if "alpn" in low or "no_application_protocol" in low:
        return "alpn"
    return None


def tls_reason_by_probe(host, port, ca_file, timeout=5.0):
    """One TLS handshake with the ssl module; returns a REASON or None."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        return "cannot load CA file: %s" % e
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=host) as tls:
                if tls.selected_alpn_protocol() != "h2":
                    return "alpn: server did not select h2"
                return None
    except ssl.SSLCertVerificationError as e:
        code = getattr(e, "verify_code", None)
        msg = getattr(e, "verify_message", "") or str(e)
        if code == 10:                          # X509_V_ERR_CERT_HAS_EXPIRED
            return "expired (%s)" % msg
        if code == 62 or "mismatch" in msg.lower():   # X509_V_ERR_HOSTNAME_MISMATCH / IP
            return "name mismatch (%s)" % msg
        if code == 64:                          # X509_V_ERR_IP_ADDRESS_MISMATCH
            return "name mismatch (%s)" % msg
        if code in (2, 18, 19, 20, 21):         # issuer unknown / self-signed untrusted
            return "unknown ca (%s)" % msg
        return "verify failed (%s)" % msg
    except ssl.SSLError as e:
        low = str(e).lower()
        if "no_application_protocol" in low or "alpn" in low:
            return "alpn (%s)" % e
        return "handshake failed (%s)" % e
    except OSError:
        return None


def classify(err, host, port, ca_file):
    """Maps an RpcError to a Fail with the contract's exit status and line."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else None
    text = _error_text(err)
    low = text.lower()
    if code == grpc.StatusCode.UNAVAILABLE and any(m in low for m in CONNECT_MARKERS):
        detail = _one_line(details or text)
        if any(m in low for m in TLS_MARKERS):
            reason = (tls_reason_from_text(text) or tls_reason_by_probe(host, port, ca_file)
                      or "handshake failed")
            return Fail(EX_CONNECT, "error: tls: %s [%s]" % (reason, detail))
        return Fail(EX_CONNECT, "error: connect: %s" % detail)
    name = code.name if code is not None else "UNKNOWN"
    return Fail(EX_RPC, "error: %s: %s" % (name, details or ""))


def _one_line(s):
    return " ".join(str(s).split())


# ---------------------------------------------------------------------------


def payload(index, size):
    """SIZE bytes of printable ASCII, different for each message index."""
    head = "%d:" % index
    body = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    reps = size // len(body) + 2
    return (head + body * reps)[:size]


class Client:
    def __init__(self, args, pb):
        self.args = args
        self.pb = pb
        self.host, self.port = args.host, args.port
        with open(args.ca, "rb") as f:
            roots = f.read()
        creds = grpc.ssl_channel_credentials(root_certificates=roots)
        options = [("grpc.max_receive_message_length", args.max_message),
                   ("grpc.max_send_message_length", -1),
                   ("grpc.enable_retries", 0),
                   # Every connection fresh; no sharing with other channels.
                   ("grpc.use_local_subchannel_pool", 1)]
        self.channel = grpc.secure_channel(args.connect, creds, options=options)
        ch = self.channel
        self.status_rpc = ch.unary_unary(
            ncgrpc_stubs.METHOD_STATUS,
            request_serializer=pb.NcgrpcServerStatusGetRequest.SerializeToString,
            response_deserializer=pb.NcgrpcServerStatusGetResponse.FromString)
        self.init_rpc = ch.unary_unary(
            ncgrpc_stubs.METHOD_INITIALIZE,
            request_serializer=pb.NcgrpcInitializeRequest.SerializeToString,
            response_deserializer=pb.NcgrpcInitializeResponse.FromString)
        self.cmd_rpc = ch.stream_stream(
            ncgrpc_stubs.METHOD_COMMANDGET,
            request_serializer=pb.NcgrpcCommandGetRequest.SerializeToString,
            response_deserializer=pb.NcgrpcCommandGetResponse.FromString)

    @property
    def timeout(self):
        d = self.args.deadline
        return None if d is None else d / 1000.0

    def fail(self, err):
        return classify(err, self.host, self.port, self.args.ca)

    def init_request(self):
        return self.pb.NcgrpcInitializeRequest(
            instance_id=random.SystemRandom().getrandbits(64),
            device_id=self.args.device_id, secret_key=self.args.secret)

    def metadata(self):
        return list(self.args.metadata_pairs)

    # -- commands -----------------------------------------------------------

    def cmd_status(self):
        try:
            resp = self.status_rpc(self.pb.NcgrpcServerStatusGetRequest(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise self.fail(e)
        out("status %s" % self.pb.StatusResponse.Name(resp.status))

    def cmd_initialize(self):
        try:
            resp, call = self.init_rpc.with_call(self.init_request(), timeout=self.timeout)
        except grpc.RpcError as e:
            raise self.fail(e)
        out("session_type %s" % self.pb.SessionType.Name(resp.session_type))
        for k, v in custom_metadata(call.trailing_metadata()):
            out("trailer %s=%s" % (k, v))

    def cmd_cancel_initialize(self, ms):
        fut = self.init_rpc.future(self.init_request(), timeout=self.timeout)
        try:
            fut.result(timeout=ms / 1000.0)
        except grpc.FutureTimeoutError:
            fut.cancel()
            out("cancelled")
            return
        except grpc.RpcError as e:
            raise self.fail(e)
        raise Fail(EX_RPC, "error: cancel-initialize: the call completed before %d ms" % ms)

    def _stream(self, requests):
        return self.cmd_rpc(requests, timeout=self.timeout, metadata=self.metadata())

    def cmd_echo(self, count, size):
        msgs = [payload(i, size) for i in range(count)]
        call = self._stream(self.pb.NcgrpcCommandGetRequest(message=m) for m in msgs)
        received = 0
        try:
            for resp in call:
                got = resp.netconf_command if resp.WhichOneof("command") != "csh_command" \
                    else resp.csh_command
                if received >= count or got != msgs[received]:
                    call.cancel()
                    raise Fail(EX_RPC, "error: echo: message %d differs from what was sent"
                               % received)
                received += 1
            headers = call.initial_metadata()
            trailers = call.trailing_metadata()
        except grpc.RpcError as e:
            raise self.fail(e)
        if received != count:
            raise Fail(EX_RPC, "error: echo: %d of %d messages echoed" % (received, count))
        for k, v in custom_metadata(headers):
            out("header %s=%s" % (k, v))
        for k, v in custom_metadata(trailers):
            out("trailer %s=%s" % (k, v))
        out("echo ok count=%d bytes=%d" % (count, count * size))

    def cmd_send_status(self, code, text):
        msg = "status:%s %s" % (code, text)
        call = self._stream(iter([self.pb.NcgrpcCommandGetRequest(message=msg)]))
        try:
            for _ in call:
                pass
        except grpc.RpcError as e:
            raise self.fail(e)
        raise Fail(EX_RPC, "error: send-status: the call ended with status OK")

    def cmd_bench_stream(self, seconds, size):
        msg = self.pb.NcgrpcCommandGetRequest(message=payload(0, size))
        window = threading.Semaphore(BENCH_IN_FLIGHT)
        stop_at = [None]
        sent = [0]

        def requests():
            while time.monotonic() < stop_at[0]:
                # Bounded: a stalled server ends the run via the deadline
                # below, or this wait gives up.
                while not window.acquire(timeout=0.5):
                    if time.monotonic() >= stop_at[0]:
                        return
                sent[0] += 1
                yield msg

        start = time.monotonic()
        stop_at[0] = start + seconds
        timeout = self.timeout if self.timeout is not None else seconds + 30
        call = self.cmd_rpc(requests(), timeout=timeout, metadata=self.metadata())
        n = 0
        nbytes = 0
        try:
            for resp in call:
                window.release()
                n += 1
                nbytes += len(resp.netconf_command or resp.csh_command)
        except grpc.RpcError as e:
            raise self.fail(e)
        elapsed = time.monotonic() - start
        out("bench-stream messages=%d bytes=%d seconds=%.3f mib_per_s=%.2f"
            % (n, nbytes, elapsed, nbytes / elapsed / 1048576.0))

    def cmd_bench_unary(self, seconds):
        req = self.pb.NcgrpcServerStatusGetRequest()
        timeout = self.timeout
        n = 0
        start = time.monotonic()
        end = start + seconds
        try:
            while time.monotonic() < end:
                self.status_rpc(req, timeout=timeout)
                n += 1
        except grpc.RpcError as e:
            raise self.fail(e)
        elapsed = time.monotonic() - start
        out("bench-unary calls=%d seconds=%.3f calls_per_s=%.1f" % (n, elapsed, n / elapsed))


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("pyclient: %s\n" % message)
        sys.exit(EX_USAGE)


def usage_error(msg):
    sys.stderr.write("pyclient: %s\n" % msg)
    sys.exit(EX_USAGE)


def parse_connect(text):
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^\[\]:]+):(\d+)", text)
    if not m:
        usage_error("bad --connect address: %s" % text)
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        usage_error("bad port in --connect: %s" % text)
    return host, port


def parse_metadata(items):
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or key != key.lower() or key.startswith("grpc-") \
                or not re.fullmatch(r"[0-9a-z_.-]+", key):
            usage_error("bad --metadata: %s" % item)
        if key.endswith("-bin"):
            try:
                value = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
            except (binascii.Error, ValueError):
                usage_error("--metadata %s: value is not base64" % key)
        pairs.append((key, value))
    return pairs


def nonneg_int(s):
    if not re.fullmatch(r"\d+", s):
        raise ValueError(s)
    return int(s)


def main():
    try:
        sys.stdout.reconfigure(encoding="utf-8", errors="backslashreplace")
    except AttributeError:
        pass
    p = Parser(prog="pyclient.py")
    p.add_argument("--connect", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--device-id", default="dev1")
    p.add_argument("--secret", default="secret")
    p.add_argument("--deadline", type=int)
    p.add_argument("--metadata", action="append", default=[])
    p.add_argument("--max-message", type=int, default=4194304)
    p.add_argument("--stub-dir")
    p.add_argument("command")
    p.add_argument("cmd_args", nargs="*")
    args = p.parse_args()
    args.host, args.port = parse_connect(args.connect)
    args.metadata_pairs = parse_metadata(args.metadata)
    if args.deadline is not None and args.deadline <= 0:
        usage_error("--deadline must be positive")
    if args.max_message <= 0:
        usage_error("--max-message must be positive")

    arity = {"status": 0, "initialize": 0, "echo": 2, "cancel-initialize": 1,
             "send-status": 2, "bench-stream": 2, "bench-unary": 1}
    if args.command not in arity:
        usage_error("unknown command: %s" % args.command)
    if len(args.cmd_args) != arity[args.command]:
        usage_error("%s takes %d argument(s)" % (args.command, arity[args.command]))
    try:
        if args.command == "send-status":
            nums = [nonneg_int(args.cmd_args[0])]
        else:
            nums = [nonneg_int(a) for a in args.cmd_args]
    except ValueError:
        usage_error("bad number in arguments of %s" % args.command)
    if args.command in ("echo", "bench-stream") and nums[1] <= 0 or \
            args.command in ("bench-stream", "bench-unary") and nums[0] <= 0:
        usage_error("bad arguments for %s" % args.command)
    if not os.path.isfile(args.ca):
        usage_error("cannot read --ca %s" % args.ca)

    pb = ncgrpc_stubs.load(args.stub_dir)
    client = Client(args, pb)
    try:
        if args.command == "status":
            client.cmd_status()
        elif args.command == "initialize":
            client.cmd_initialize()
        elif args.command == "echo":
            client.cmd_echo(nums[0], nums[1])
        elif args.command == "cancel-initialize":
            client.cmd_cancel_initialize(nums[0])
        elif args.command == "send-status":
            client.cmd_send_status(nums[0], args.cmd_args[1])
        elif args.command == "bench-stream":
            client.cmd_bench_stream(nums[0], nums[1])
        elif args.command == "bench-unary":
            client.cmd_bench_unary(nums[0])
    except Fail as f:
        out(f.line)
        return f.status
    finally:
        client.channel.close()
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
