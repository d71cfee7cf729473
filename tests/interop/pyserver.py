#!/usr/bin/python3
"""grpcio twin of ncgrpc-testd; see docs/internals/testtools.md.

pyserver.py --listen HOST:PORT --cert FILE --key FILE [--secret S]
            [--release-after MS] [--session-type netconf|csh]
            [--max-message BYTES] [--stub-dir DIR]

--stub-dir (or $NCGRPC_STUB_DIR) is where the generated protobuf module is
cached; it is the only option ncgrpc-testd does not have.
"""
import sys

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import argparse  # noqa: E402
import base64  # noqa: E402
import faulthandler  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import threading  # noqa: E402
from concurrent import futures  # noqa: E402

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ncgrpc_stubs  # noqa: E402

EX_USAGE = 64

# Request metadata that is part of HTTP/2 or gRPC itself, never echoed.
RESERVED_KEYS = {"te", "content-type", "user-agent", "host", "authority",
                 "accept-encoding", "content-length", "connection",
                 "transfer-encoding", "upgrade", "keep-alive",
                 "proxy-connection"}

CODES = {sc.value[0]: sc for sc in grpc.StatusCode}

_out_lock = threading.Lock()


def emit(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def custom_metadata(md):
    """(key, value) pairs of custom metadata, sorted by key; -bin values as base64."""
    out = []
    for key, value in md or ():
        key = key.lower()
        if key.startswith(":") or key.startswith("grpc-") or key in RESERVED_KEYS:
            continue
        if key.endswith("-bin"):
            if isinstance(value, str):
                value = value.encode("latin-1")
            value = base64.b64encode(value).decode("ascii")
        out.append((key, value))
    out.sort(key=lambda kv: kv[0])
    return out


class Service:
    def __init__(self, pb, args):
        self.pb = pb
        self.secret = args.secret
        self.release_after = args.release_after / 1000.0
        self.csh = args.session_type == "csh"

    def status(self, request, context):
        emit("status")
        return self.pb.NcgrpcServerStatusGetResponse(status=self.pb.SUCCESS)

    def initialize(self, request, context):
        device = request.device_id
        if request.secret_key != self.secret:
            emit("initialize-rejected device=%s" % device)
            context.abort(grpc.StatusCode.UNAUTHENTICATED,
                          "invalid secret for device '%s'" % device)
        emit("initialize device=%s instance=%d" % (device, request.instance_id))
        done = threading.Event()
        # Runs when the RPC terminates: cancelled by the client, deadline
        # expired, connection lost -- or after we answered (then ignored).
        if not context.add_callback(done.set):
            done.set()
        if done.wait(self.release_after) or not context.is_active():
            emit("initialize-cancelled device=%s" % device)
            return None
        context.set_trailing_metadata((("conn_type", "csh" if self.csh else "netconf"),))
        emit("initialize-released device=%s" % device)
        return self.pb.NcgrpcInitializeResponse(
            session_type=self.pb.CSH if self.csh else self.pb.NETCONF)

    def command_get(self, request_iterator, context):
        md = custom_metadata(context.invocation_metadata())
        emit(" ".join(["commandget-open"] + ["%s=%s" % kv for kv in md]))
        st = {"count": 0, "bytes": 0, "said": False}

        # grpcio ends the request iterator the same way on a half-close and
        # when gRPC Core failed the call under us (a message over
        # --max-message is the case at hand), and it never resumes this
        # generator once the client cancelled while a response was being
        # sent.  So which one it was is known only when the call has
        # terminated: say it then, once.
        def on_terminated():
            if st["said"]:
                return
            st["said"] = True
            if client_cancelled(context):
                emit("commandget-cancelled count=%d" % st["count"])
            else:
                emit("commandget-end count=%d bytes=%d" % (st["count"], st["bytes"]))
        registered = context.add_callback(on_terminated)
        try:
            # Echo the custom request metadata in the response headers.  This
            # raises RpcError too if the client has already cancelled.
            context.send_initial_metadata(
                [(k, base64.b64decode(v) if k.endswith("-bin") else v) for k, v in md])
            for req in request_iterator:
                msg = req.message
                if msg.startswith("status:"):
                    m = re.match(r"status:(\d+)(?: (.*))?\Z", msg, re.S)
                    code = CODES.get(int(m.group(1))) if m else None
                    if code is None:
                        code, text = grpc.StatusCode.INVALID_ARGUMENT, "bad status request"
                    else:
                        text = m.group(2) or ""
                    st["said"] = True  # the contract prints no line here
                    context.set_code(code)
                    context.set_details(text)
                    return
                st["count"] += 1
                st["bytes"] += len(msg.encode("utf-8"))
                if self.csh:
                    yield self.pb.NcgrpcCommandGetResponse(csh_command=msg)
                else:
                    yield self.pb.NcgrpcCommandGetResponse(netconf_command=msg)
        except grpc.RpcError:
            if not st["said"]:
                st["said"] = True
                emit("commandget-cancelled count=%d" % st["count"])
            return
        context.set_trailing_metadata((("x-echo-count", str(st["count"])),))
        if not registered:
            on_terminated()


def client_cancelled(context):
    """True if the terminated call was cancelled rather than completed.

    grpcio 1.51 has no public API for it; its _Context keeps the RPC state,
    whose `client` is 'cancelled' once Core reported the call cancelled
    (client RST_STREAM, deadline, or a Core-side failure)."""
    state = getattr(context, "_state", None)
    return getattr(state, "client", None) == "cancelled"


def parse_listen(text):
    """'HOST:PORT' or '[V6]:PORT' -> (host as printed, port)."""
    m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+):(\d+)", text)
    if not m or int(m.group(2)) > 65535:
        raise ValueError(text)
    return m.group(1), int(m.group(2))


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("pyserver: %s\n" % message)
        sys.exit(EX_USAGE)


def main():
    p = Parser(prog="pyserver.py")
    p.add_argument("--listen", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--secret", default="secret")
    p.add_argument("--release-after", type=int, default=0)
    p.add_argument("--session-type", choices=["netconf", "csh"], default="netconf")
    p.add_argument("--max-message", type=int, default=4194304)
    p.add_argument("--stub-dir")
    args = p.parse_args()
    try:
        host, port = parse_listen(args.listen)
    except ValueError:
        p.error("bad --listen address: %s" % args.listen)
    if args.release_after < 0 or args.max_message <= 0:
        p.error("bad numeric option")
    try:
        with open(args.cert, "rb") as f:
            cert = f.read()
        with open(args.key, "rb") as f:
            key = f.read()
    except OSError as e:
        sys.stderr.write("pyserver: %s\n" % e)
        return 1

    pb = ncgrpc_stubs.load(args.stub_dir)
    svc = Service(pb, args)
    handlers = {
        "NcgrpcServerStatusGet": grpc.unary_unary_rpc_method_handler(
            svc.status,
            request_deserializer=pb.NcgrpcServerStatusGetRequest.FromString,
            response_serializer=pb.NcgrpcServerStatusGetResponse.SerializeToString),
        "NcgrpcInitialize": grpc.unary_unary_rpc_method_handler(
            svc.initialize,
            request_deserializer=pb.NcgrpcInitializeRequest.FromString,
            response_serializer=pb.NcgrpcInitializeResponse.SerializeToString),
        "NcgrpcCommandGet": grpc.stream_stream_rpc_method_handler(
            svc.command_get,
            request_deserializer=pb.NcgrpcCommandGetRequest.FromString,
            response_serializer=pb.NcgrpcCommandGetResponse.SerializeToString),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        handlers=[grpc.method_handlers_generic_handler(ncgrpc_stubs.SERVICE, handlers)],
        options=[("grpc.max_receive_message_length", args.max_message),
                 ("grpc.max_send_message_length", args.max_message),
                 ("grpc.so_reuseport", 0)])
    creds = grpc.ssl_server_credentials([(key, cert)])
    try:
        real_port = server.add_secure_port("%s:%d" % (host, port), creds)
    except RuntimeError as e:
        sys.stderr.write("pyserver: cannot listen on %s: %s\n" % (args.listen, e))
        return 1
    if real_port == 0:
        sys.stderr.write("pyserver: cannot listen on %s\n" % args.listen)
        return 1
    server.start()
    emit("listening %s:%d" % (host, real_port))

    # kill -USR1 dumps every thread's stack on stderr (debugging hangs).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    server.stop(0).wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
