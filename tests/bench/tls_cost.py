#!/usr/bin/python3
"""What TLS to backends costs sidelb per call, in instructions (callgrind):
stable on a shared machine, unlike wall or CPU time.

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/tls_cost.py [--calls N] [--baseline OTHER/sidelb]

For h2c and for TLS to the same kind of backend (the C test backend, with
--tls-cert for TLS), sidelb runs under valgrind --tool=callgrind twice, once
with N and once with 2N unary calls from h2load (1 connection, 10 streams);
the difference over N is the cost of one call without start-up, handshakes
and shutdown. Prints instructions per call for both and the difference.
--baseline: also h2c with another sidelb binary (e.g. one built before TLS),
to show what cleartext calls pay for TLS being there.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import peers  # noqa: E402
import sidelb_harness  # noqa: E402
from bench import grpc_frame, make_pki  # noqa: E402


def total_ir(tmp, cfg, calls, body, binary=None):
    out = os.path.join(tmp, "cg.out")
    path = os.path.join(tmp, "c.json")
    with open(path, "w") as f:
        import json
        json.dump(cfg, f)
    argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out, binary or peers.binary("sidelb"), "-c", path,
            "-l", "notice", "--grace-ms", "100"]
    slb = peers.Proc(argv, name="sidelb-callgrind", ready=r"sidelb \S+ ready", timeout=120)
    port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
    r = subprocess.run(["h2load", "-n", str(calls), "-c", "1", "-m", "10", "-t", "1", "-d", body, "-H",
                        "content-type: application/grpc", "-H", "te: trailers",
                        "http://127.0.0.1:%d/sidelb.test.Echo/Unary" % port], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=600)
    text = r.stdout.decode()
    m = re.search(r"(\d+) succeeded", text)
    assert m and int(m.group(1)) == calls, text
    slb.signal(signal.SIGTERM)
    slb.wait(120)
    with open(out) as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError("no totals in callgrind output")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--baseline", help="another sidelb binary: its h2c cost is printed too")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sidelb-tlscost-")
    try:
        body = os.path.join(tmp, "body.bin")
        with open(body, "wb") as f:
            f.write(grpc_frame(16))
        pki = make_pki(tmp)
        plain = peers.start_c_backend("cost-0", stats=False)
        tls = peers.start_c_backend("cost-1", stats=False,
                                    extra_args=["--tls-cert", pki["server.pem"], "--tls-key", pki["server.key"]])
        res = {}
        runs = [("h2c", plain, {}, None), ("tls", tls, {"tls": {"ca_file": pki["ca.pem"]}}, None)]
        if args.baseline:
            runs.append(("h2c-baseline", plain, {}, args.baseline))
        for name, be, extra, binary in runs:
            cfg = sidelb_harness.simple_config([be.addr], max_connections_per_backend=1, **extra)
            a = total_ir(tmp, cfg, args.calls, body, binary)
            b = total_ir(tmp, cfg, 2 * args.calls, body, binary)
            res[name] = (b - a) / args.calls
            print("%s: %.0f instructions per call (%d calls: %d, %d calls: %d)" % (name, res[name], args.calls, a,
                                                                                    2 * args.calls, b), flush=True)
        print("TLS to the backend costs %.0f instructions per call more (x%.2f)" % (
            res["tls"] - res["h2c"], res["tls"] / res["h2c"]))
        if args.baseline:
            print("h2c vs the baseline binary: %+.0f instructions per call (x%.4f)" % (
                res["h2c"] - res["h2c-baseline"], res["h2c"] / res["h2c-baseline"]))
    finally:
        peers.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
