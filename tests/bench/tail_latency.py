#!/usr/bin/python3
"""Tail latency at a fixed load, sidelb vs HAProxy, and where sidelb's loop turns spend their time.

    git apply tests/bench/loop_stats.patch && make BUILD=build-ls build-ls/sidelb && git apply -R tests/bench/loop_stats.patch
    SIDELB_BUILD=build /usr/bin/python3 tests/bench/tail_latency.py --binary build-ls/sidelb
        [--n N] [--conns C] [--streams M] [--reps R] [--rps PER_CLIENT] [--pin-backends] [--targets sidelb,haproxy]

Same setup as tests/bench/bench.py (3 C backends, h2load on CPU 1, the proxy on
CPU 0, unary calls of --payload bytes; HAProxy from bench.haproxy_config), but
h2load runs are compared at p50/p99/p99.9 from its per-request log, closed
loop (-c x -m calls in flight) or open loop (--rps per client). --pin-backends
puts the backends on CPU 1 with h2load, so nothing of the benchmark shares the
proxy's core.

loop_stats.patch (instrumentation, not for production: arrays, a clock read
per turn and per dirty connection) makes sidelb write, on exit, to
$SIDELB_LOOP_STATS one line per loop turn (prepare to prepare): wall length,
busy part (wall minus libuv's poll idle time), reads, flushed connections,
thread CPU time, bytes read; and per flushed connection the delay from its
first mark_dirty in the turn to its flush (write coalescing delay). This
script prints their percentiles; "busy - cpu" is time the runnable loop
waited for the CPU (preempted).
"""

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import bench  # noqa: E402
import peers  # noqa: E402
import sidelb_harness  # noqa: E402


def pct(vals, qs=(0.5, 0.9, 0.99, 0.999, 1.0)):
    s = sorted(vals)
    if not s:
        return "-"
    return " ".join("p%s=%.0f" % (("%g" % (q * 100)), s[min(len(s) - 1, int(q * (len(s) - 1)))]) for q in qs)


def analyse(path):
    """Percentiles of the turns that read something (idle turns say nothing about latency)."""
    turns, delays = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("t "):
                wall, busy, reads, flushes, cpu, nbytes = (int(x) for x in line.split()[1:])
                if reads:
                    turns.append((wall / 10, busy / 10, reads, flushes, cpu / 10, nbytes))
            elif line.startswith("d "):
                delays.append(int(line.split()[1]) / 10)
    print("loop turns with reads: %d" % len(turns))
    for name, k in (("turn wall us", 0), ("turn busy us", 1), ("turn cpu us", 4), ("reads per turn", 2),
                    ("bytes read per turn", 5), ("flushes per turn", 3)):
        print("  %-26s %s" % (name, pct([t[k] for t in turns])))
    print("  %-26s %s" % ("busy - cpu us (preempted)", pct([t[1] - t[4] for t in turns])))
    print("  %-26s %s" % ("dirty -> flush delay us", pct(delays)))


def h2load(target, args, body, tmp, rep):
    logf = os.path.join(tmp, "h2load-%s-%d.log" % (target.name, rep))
    argv = ["taskset", "-c", "1", "h2load", "-n", str(args.n), "-c", str(args.conns), "-m", str(args.streams),
            "-t", "1"] + (["--rps", str(args.rps)] if args.rps else []) + [
        "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", logf,
        "http://127.0.0.1:%d%s" % (target.port, bench.PATH)]
    cpu0 = bench.cpu_ticks(target.pid)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
    cpu1 = bench.cpu_ticks(target.pid)
    with open(logf) as f:
        lat = sorted(int(cols[2]) for cols in (line.split("\t") for line in f) if len(cols) >= 3 and cols[1] == "200")
    os.unlink(logf)
    m = bench.RE_FINISHED.search(out)
    if not m or len(lat) != args.n:
        raise RuntimeError("%s: h2load: %d of %d calls OK\n%s" % (target.name, len(lat), args.n, out[-1500:]))
    print("%-8s %8.0f calls/s  p50 %6.0f  p99 %6.0f  p99.9 %6.0f  max %6.0f us  proxy CPU %.1f us/call" % (
        target.name, float(m.group(3)), bench.percentile(lat, .5), bench.percentile(lat, .99),
        bench.percentile(lat, .999), lat[-1], (cpu1 - cpu0) / bench.CLK_TCK * 1e6 / len(lat)), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100000, help="calls per h2load run")
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--streams", type=int, default=10)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--payload", type=int, default=100)
    ap.add_argument("--rps", type=int, default=0, help="h2load --rps per client (open loop); 0: closed loop")
    ap.add_argument("--pin-backends", action="store_true", help="backends on CPU 1 with h2load")
    ap.add_argument("--targets", default="sidelb,haproxy")
    ap.add_argument("--binary", default=None, help="sidelb binary (one built with loop_stats.patch)")
    ap.add_argument("--stats", default=None, help="where sidelb writes its loop stats (default: a temp file)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="sidelb-tail-")
    stats = args.stats or os.path.join(tmp, "loop_stats.txt")
    os.environ["SIDELB_LOOP_STATS"] = stats  # read by a sidelb built with loop_stats.patch
    try:
        bes = [peers.start_c_backend("tail-%d" % i, stats=False, extra_args=["--max-concurrent-streams", "100000"])
               for i in range(3)]
        targets = []
        for name in args.targets.split(","):
            if name == "sidelb":
                cfg = sidelb_harness.simple_config([b.addr for b in bes], max_connections_per_backend=2)
                cfg["listeners"][0]["max_concurrent_streams"] = 10000
                p = sidelb_harness.start_sidelb(cfg, log_level="notice", binary=args.binary)
                targets.append(bench.Target("sidelb", p.port, p))
            elif name == "haproxy":
                port = peers.free_port()
                p = peers.Proc(["haproxy", "-f", bench.haproxy_config(tmp, port, bes, args.streams), "-db"],
                               name="haproxy", ready=None, port=port)
                targets.append(bench.Target("haproxy", port, p))
        for t in targets:
            bench.pin(t.pid, 0, True)
        if args.pin_backends:
            for b in bes:
                bench.pin(b.pid, 1, True)
        body = os.path.join(tmp, "body.bin")
        with open(body, "wb") as f:
            f.write(bench.grpc_frame(args.payload))
        print("%d calls/run, h2load -c %d -m %d%s, payload %d B, proxy on CPU 0, backends %s" % (
            args.n, args.conns, args.streams, " --rps %d" % args.rps if args.rps else " (closed loop)", args.payload,
            "on CPU 1" if args.pin_backends else "floating"))
        for rep in range(args.reps):
            for t in targets:
                h2load(t, args, body, tmp, rep)
    finally:
        for p in peers.stop_all():
            p.remove_files()
    if os.path.exists(stats):
        analyse(stats)
    else:
        print("(no loop stats: run with a sidelb built with tests/bench/loop_stats.patch)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
