"""Generates (once) and imports the Python modules of a proto file.

    wire = pstubs.load("ncgrpc")            # proto/ncgrpc.proto -> ncgrpc_pb2
    op = pstubs.load("ncgrpc_operator")     # -> ncgrpc_operator_pb2

Modules are generated with grpc_tools.protoc into
STUB_DIR/<name>-<sha256 of the proto, 16 hex digits>/ and imported from
there, so a changed proto gets fresh modules and concurrent processes never
see half-written files (each generates into a private directory and renames
it into place).  STUB_DIR is $NCGRPC_STUB_DIR or <tmp>/ncgrpc-pystubs-<uid>.
Nothing is written into the source tree.
"""
import hashlib
import importlib
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))


def _generate(proto, dest):
    from grpc_tools import protoc  # slow to import: only when needed
    well_known = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["grpc_tools.protoc", "-I" + os.path.dirname(proto)]
    if os.path.isdir(well_known):
        args.append("-I" + well_known)
    args += ["--python_out=" + dest, proto]
    if protoc.main(args) != 0:
        raise RuntimeError("grpc_tools.protoc failed on %s" % proto)


def load(name, stub_dir=None):
    """Returns the module NAME_pb2 of proto/NAME.proto, generating it if needed."""
    proto = os.path.join(PROTO_DIR, name + ".proto")
    with open(proto, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    base = (stub_dir or os.environ.get("NCGRPC_STUB_DIR")
            or os.path.join(tempfile.gettempdir(), "ncgrpc-pystubs-%d" % os.getuid()))
    final = os.path.join(os.path.abspath(base), "%s-%s" % (name, digest))
    module = name + "_pb2"
    if not os.path.exists(os.path.join(final, module + ".py")):
        os.makedirs(base, exist_ok=True)
        work = tempfile.mkdtemp(prefix=".gen-", dir=base)
        try:
            _generate(proto, work)
            try:
                os.rename(work, final)
                work = None
            except OSError:
                if not os.path.exists(os.path.join(final, module + ".py")):
                    raise
        finally:
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
    if final not in sys.path:
        sys.path.insert(0, final)
    return importlib.import_module(module)
