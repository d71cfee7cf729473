#!/usr/bin/python3
"""fault.RestartTest: kill -9 of ncgrpcd with 50 devices (5 agents x 10
clients, waittime 5 s): all back within waittime + 10 s, and shell sessions
work at once.  The scalable version is scripts/fault-restart.

    test_restart.py --ncgrpcd PATH --agent PATH [--stub-dir DIR]
"""
import sys

sys.dont_write_bytecode = True

import argparse  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import unittest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import restart  # noqa: E402

CFG = {}


class RestartTest(unittest.TestCase):
    def test_kill9_50_devices(self):
        work = tempfile.mkdtemp(prefix="ncgrpc-restart-")
        self.addCleanup(shutil.rmtree, work, ignore_errors=True)
        fig = restart.run(CFG["ncgrpcd"], CFG["agent"], work, devices=50, per_agent=10,
                          waittime=5, margin=10.0, sessions=10,
                          say=lambda s: sys.stderr.write("    " + s + "\n"))
        self.assertEqual(fig["sessions_failed"], 0)


def main():
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--ncgrpcd", required=True)
    p.add_argument("--agent", required=True)
    p.add_argument("--stub-dir")
    args, rest = p.parse_known_args()
    CFG["ncgrpcd"], CFG["agent"] = args.ncgrpcd, args.agent
    if args.stub_dir:
        os.environ["NCGRPC_STUB_DIR"] = args.stub_dir
    prog = unittest.main(module=__name__, argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    return 0 if prog.result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
