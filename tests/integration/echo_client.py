#!/usr/bin/python3
"""Small sidelb.test.Echo client for the demo and for poking at a target.

    echo_client.py --target 127.0.0.1:15001 [--calls N] [--method Unary|ServerStream|ClientStream|Bidi]
                   [--payload TEXT] [--count K] [--delay-ms MS] [--timeout S] [--interval-ms MS]
                   [--wait-for-ready] [--quiet]

Makes N calls over one channel (sidelb balances each call), prints
"<i> <backend_id>" for every reply (or "<i> ERROR <code> <details>"), then a
count per backend: "backend <id> <n>" lines and "errors <n>". Exit status 0
when every call succeeded, 1 otherwise.
"""

import argparse
import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import peers  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="host:port (sidelb listener or a backend)")
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--method", default="Unary", choices=["Unary", "ServerStream", "ClientStream", "Bidi"])
    ap.add_argument("--payload", default="hello")
    ap.add_argument("--count", type=int, default=1, help="replies (ServerStream) or requests (Client/Bidi)")
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=5.0, help="deadline per call, seconds")
    ap.add_argument("--interval-ms", type=int, default=0, help="pause between calls")
    ap.add_argument("--wait-for-ready", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="only the per-backend counts")
    args = ap.parse_args()

    stub = peers.echo_stub(args.target)
    r = peers.req(payload=args.payload.encode(), delay_ms=args.delay_ms, response_count=args.count)
    per_backend = collections.Counter()
    errors = 0
    for i in range(args.calls):
        kw = {"timeout": args.timeout, "wait_for_ready": args.wait_for_ready or None}
        try:
            if args.method == "Unary":
                replies = [stub.Unary(r, **kw)]
            elif args.method == "ServerStream":
                replies = list(stub.ServerStream(r, **kw))
            elif args.method == "ClientStream":
                replies = [stub.ClientStream(iter([r] * args.count), **kw)]
            else:
                replies = list(stub.Bidi(iter([r] * args.count), **kw))
            ids = sorted(set(x.backend_id for x in replies))
            per_backend[",".join(ids)] += 1
            if not args.quiet:
                print("%d %s" % (i, ",".join(ids)), flush=True)
        except grpc.RpcError as e:
            errors += 1
            if not args.quiet:
                print("%d ERROR %s %s" % (i, e.code().name, e.details()), flush=True)
        if args.interval_ms:
            time.sleep(args.interval_ms / 1000.0)
    for b, n in sorted(per_backend.items()):
        print("backend %s %d" % (b, n))
    print("errors %d" % errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
