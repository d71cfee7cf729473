#!/usr/bin/python3
"""Checks proto/etcd/strip.awk: no annotation is left, nothing else is lost.

Runs the awk script on a small sample with every construct it handles, then
strips etcd's own .proto files as the build does: no gogoproto
or google.api text outside comments, and the same messages, fields and RPCs
as etcd's originals.
"""
import argparse
import os
import re
import subprocess
import sys

SAMPLE = '''syntax = "proto3";
package p;

import "gogoproto/gogo.proto";
import "etcd/mvcc/mvccpb/kv.proto";
import "google/api/annotations.proto";

option (gogoproto.marshaler_all) = true;

service S {
  // keep this comment
  rpc A(Req) returns (Resp) {
      option (google.api.http) = {
        post: "/v3/a"
        body: "*"
        additional_bindings {
            post: "/v3/b"
            body: "*"
        }
    };
  }
}

message Req {
  int64 ID = 1 [(gogoproto.customname) = "X"];
  bytes key = 2;
}
'''

EXPECTED = '''syntax = "proto3";
package p;

import "etcd/mvcc/mvccpb/kv.proto";


service S {
  // keep this comment
  rpc A(Req) returns (Resp) {
  }
}

message Req {
  int64 ID = 1;
  bytes key = 2;
}
'''


def strip(awk, script, text):
    return subprocess.run([awk, "-f", script], input=text, text=True,
                          capture_output=True, check=True).stdout


def code(text):
    return "\n".join(l.split("//")[0] for l in text.splitlines())


def shape(text):
    c = code(text)
    return (re.findall(r"\bmessage\s+\w+", c), re.findall(r"\brpc\s+\w+", c),
            re.findall(r"=\s*\d+\s*[;\[]", c).__len__())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--awk", required=True)
    ap.add_argument("--strip", required=True)
    ap.add_argument("--src", required=True)
    a = ap.parse_args()
    got = strip(a.awk, a.strip, SAMPLE)
    if got != EXPECTED:
        sys.exit("sample stripped wrongly:\n" + got)
    n = 0
    for root, _, files in os.walk(a.src):
        for f in files:
            if not f.endswith(".proto"):
                continue
            src = os.path.join(root, f)
            orig = open(src).read()
            out = strip(a.awk, a.strip, orig)
            if re.search(r"gogoproto|google\.api|google/api", code(out)):
                sys.exit("%s: annotations left" % src)
            if shape(out) != shape(orig):
                sys.exit("%s: messages, rpcs or fields lost" % src)
            n += 1
    if n != 3:
        sys.exit("expected 3 etcd .proto files under %s, found %d" % (a.src, n))
    print("strip: sample and %d etcd protos ok" % n)


if __name__ == "__main__":
    main()
