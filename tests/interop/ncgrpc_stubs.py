"""Generates (once) and imports the Python protobuf module of proto/ncgrpc.proto.

The module is generated with grpc_tools.protoc into
STUB_DIR/<sha256 of the proto, 16 hex digits>/ and imported from there, so a
changed proto gets fresh stubs and concurrent processes never see half-written
files (each generates into a private directory and renames it into place).

STUB_DIR is, in order: the stub_dir argument, $NCGRPC_STUB_DIR, or
<tmp>/ncgrpc-pystubs-<uid>.  The proto is $NCGRPC_PROTO or
<repo>/proto/ncgrpc.proto.  Generated code is never written into the source
tree.
"""
import hashlib
import importlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROTO = os.path.normpath(os.path.join(HERE, "..", "..", "proto", "ncgrpc.proto"))

SERVICE = "jnx.jet.netconf.Ncgrpc"
METHOD_STATUS = "/%s/NcgrpcServerStatusGet" % SERVICE
METHOD_INITIALIZE = "/%s/NcgrpcInitialize" % SERVICE
METHOD_COMMANDGET = "/%s/NcgrpcCommandGet" % SERVICE


def _generate(proto, dest):
    from grpc_tools import protoc  # imported late: it is slow to import
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", "-I" + os.path.dirname(proto)]
    if os.path.isdir(well_known):
        args.append("-I" + well_known)
    args += ["--python_out=" + dest, "--grpc_python_out=" + dest, proto]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed (%d) on %s" % (rc, proto))


def load(stub_dir=None):
    """Returns the imported ncgrpc_pb2 module, generating it if needed."""
    proto = os.environ.get("NCGRPC_PROTO") or DEFAULT_PROTO
    with open(proto, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    base = (stub_dir or os.environ.get("NCGRPC_STUB_DIR")
            or os.path.join(tempfile.gettempdir(), "ncgrpc-pystubs-%d" % os.getuid()))
    final = os.path.join(os.path.abspath(base), digest)
    if not os.path.exists(os.path.join(final, "ncgrpc_pb2.py")):
        os.makedirs(base, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".gen-", dir=base)
        try:
            _generate(proto, work)
            try:
                os.rename(work, final)
                work = None
            except OSError:
                # Another process won the race; its files are as good as ours.
                if not os.path.exists(os.path.join(final, "ncgrpc_pb2.py")):
                    raise
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
    if final not in sys.path:
        sys.path.insert(0, final)
    return importlib.import_module("ncgrpc_pb2")


if __name__ == "__main__":
    # ncgrpc_stubs.py [STUB_DIR]: generate the stubs and print where they are.
    mod = load(sys.argv[1] if len(sys.argv) > 1 else None)
    print(os.path.dirname(mod.__file__))
