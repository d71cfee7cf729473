#!/usr/bin/python3
"""ncgrpcd against hostile devices (issue 8, finding 12): a NUL inside the
device id or the secret of NcgrpcInitialize is refused, never truncated
("r1\\0x" used to authenticate as "r1").

    test_link.py --ncgrpcd PATH --agent PATH [--stub-dir DIR] [unittest args]
"""
import sys

sys.dont_write_bytecode = True

import os  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# grpcio must not run pthread_atfork handlers: the harness forks (subprocess)
# while its threads run, and the handler once waited forever in fork().
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
import grpc  # noqa: E402
import devemu  # noqa: E402
import test_server  # noqa: E402
from test_server import ServerTestCase  # noqa: E402


class NulTest(ServerTestCase):
    def setUp(self):
        super().setUp()
        self.srv = self.new_server({"r1": "k-secret-1234"})

    def init(self, device, secret, timeout=3):
        return devemu.initialize_once(self.srv.target(), self.srv.cert_pem(), device, secret,
                                      timeout=timeout)

    def test_nul_in_device_id_refused(self):
        code, details = self.init("r1\0x", "k-secret-1234")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("NUL byte", details)
        self.assertEqual(self.op(self.srv).list_devices(), [])

    def test_nul_in_secret_refused(self):
        code, details = self.init("r1", "k-secret-1234\0junk")
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("NUL byte", details)
        self.assertEqual(self.op(self.srv).list_devices(), [])

    def test_clean_request_still_held(self):
        code, _ = self.init("r1", "k-secret-1234", timeout=2)
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED)  # a long poll: accepted


if __name__ == "__main__":
    test_server.__name__ = "test_server"
    sys.argv[0] = __file__
    # test_server.main() runs the TestCases of the __main__ module: this one.
    sys.exit(test_server.main())
