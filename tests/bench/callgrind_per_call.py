#!/usr/bin/python3
"""Instructions per call of sidelb, counted by callgrind (not timed: the figure
does not depend on a quiet machine).

For each sidelb binary given, runs it under `valgrind --tool=callgrind` twice,
with N1 and N2 unary calls from h2load (-c 4 -m 8, one real gRPC request frame
each) through one listener to two C test backends, and reports
(Ir(N2) - Ir(N1)) / (N2 - N1): the instructions one more call costs, with
startup, config and shutdown subtracted out. Every call must succeed (h2load
counts the replies' DATA bytes).

  tests/bench/callgrind_per_call.py [--n1 2000 --n2 6000] [--access-log PATH] BINARY...
"""

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import peers  # noqa: E402

PATH = "/sidelb.test.Echo/Unary"


def grpc_frame(payload_len):
    msg = peers.req(payload=b"x" * payload_len).SerializeToString()
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def instructions(binary, cfg_path, port, n, body, tmp):
    out = os.path.join(tmp, "cg.out")
    for f in glob.glob(out + "*"):
        os.unlink(f)
    vg = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary, "-c", cfg_path,
                           "-l", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if not peers.wait_port(port, 60):
            raise SystemExit("sidelb under valgrind never listened: %s" % vg.stderr.read().decode()[-2000:])
        r = subprocess.run(["h2load", "-n", str(n), "-c", "4", "-m", "8", "-t", "1", "-d", body, "-H",
                            "content-type: application/grpc", "-H", "te: trailers",
                            "http://127.0.0.1:%d%s" % (port, PATH)], capture_output=True, text=True, timeout=900)
        m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", r.stdout)
        if not m or int(m.group(3)) != n:
            raise SystemExit("h2load did not complete %d calls:\n%s" % (n, r.stdout))
    finally:
        os.killpg(vg.pid, signal.SIGTERM)
        vg.wait(120)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise SystemExit("no totals in " + out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n1", type=int, default=2000)
    ap.add_argument("--n2", type=int, default=6000)
    ap.add_argument("--access-log", help="also with this access_log.path")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    backends = [peers.start_c_backend("cg-%d" % i, stats=False) for i in range(2)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            body = os.path.join(tmp, "body.bin")
            with open(body, "wb") as f:
                f.write(grpc_frame(16))
            for binary in args.binaries:
                port = peers.free_port()
                cfg = {"listeners": [{"name": "bench", "address": "127.0.0.1:%d" % port,
                                      "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
                       "clusters": [{"name": "echo", "discovery": {"static": [b.addr for b in backends]},
                                     "policy": {"round_robin": {}}}]}
                if args.access_log:
                    cfg["access_log"] = {"path": args.access_log}
                cfg_path = os.path.join(tmp, "c.json")
                with open(cfg_path, "w") as f:
                    json.dump(cfg, f)
                i1 = instructions(binary, cfg_path, port, args.n1, body, tmp)
                port2 = peers.free_port()
                cfg["listeners"][0]["address"] = "127.0.0.1:%d" % port2
                with open(cfg_path, "w") as f:
                    json.dump(cfg, f)
                i2 = instructions(binary, cfg_path, port2, args.n2, body, tmp)
                print("%s: Ir(%d calls) = %d, Ir(%d calls) = %d, per call = %.0f" %
                      (binary, args.n1, i1, args.n2, i2, (i2 - i1) / (args.n2 - args.n1)), flush=True)
    finally:
        peers.stop_all()


if __name__ == "__main__":
    main()
