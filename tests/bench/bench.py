#!/usr/bin/python3
"""Side-by-side gRPC unary benchmark: direct vs sidelb vs HAProxy vs nginx.

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/bench.py [--quick] [--rounds R] [--n N]
        [--conns C] [--streams M] [--payload BYTES] [--no-pin]
        [--targets direct,sidelb,haproxy,nginx,sidelb-tls,haproxy-tls,sidelb-w1,sidelb-w2,sidelb-w2-lr,sidelb-py,haproxy-py]
        [--before PATH/TO/OTHER/sidelb]   (also $SIDELB_BEFORE: before/after figures in one run) [--no-frames]

One run, same 3 C test backends (tests/backend, no stats file) behind every
proxy; h2load (nghttp2-client) drives sidelb.test.Echo/Unary with a real gRPC
frame as the request body. Targets are interleaved round by round. Per target:
calls/s, p50/p99/p99.9 latency (from h2load --log-file), the proxy's CPU time per
call (/proc/PID/stat utime+stime delta / calls) and ratios vs direct; read()/write()
system calls per call of the backends (/proc/PID/io: the C backends use read/write, HAProxy
send/recv, which it does not count); then frames and header bytes per call between proxy and
backend, sidelb vs HAProxy (frame_count.py: a counting relay, calls one at a time).

h2load only sees HTTP statuses, so gRPC success is checked twice: every h2load
run must receive exactly one reply message per call (DATA bytes = calls x the
reply frame size; a gRPC error is trailers-only, no DATA), and after the load
each target gets a verification pass of 200 calls with the python grpc client,
all of which must be OK (their spread over the backends is printed).

TLS rows (sidelb-tls, haproxy-tls): the apps' side stays h2c, and each proxy
originates TLS (verified against a CA made here with openssl, ALPN h2) to the
same 3 C test backends serving h2 over TLS (--tls-cert: libsidelb's TLS
filter), so the rows show what TLS to backends costs each proxy.

grpcio rows (sidelb-py, haproxy-py): the same against 3 python3-grpcio echo
servers (tests/integration/echo_server.py), n/20 calls a run (--py-n), so the
backends' CPU per call behind each proxy is also shown for a real gRPC server.

Pinning (2-core machine, unless --no-pin): h2load on CPU 1, the proxy on CPU 0,
the backends float. Rows sidelb-w1 and sidelb-w2 ("workers": 1 and 2) let sidelb
use both CPUs (h2load stays on CPU 1), so they compare the worker counts on the
same CPUs; on 2 cores shared with h2load and the backends they show the cost of
the workers more than their gain (see the README). Every process is stopped by PID, also on failure/Ctrl-C.
Exit status: 0 if every run and every verification passed, 1 otherwise.
"""

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import peers  # noqa: E402
import sidelb_harness  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
PATH = "/sidelb.test.Echo/Unary"
BACKEND_IDS = ["bench-0", "bench-1", "bench-2"]
TLS_BACKEND_IDS = ["tlsbe-0", "tlsbe-1", "tlsbe-2"]  # same length: the same reply size
PY_BACKEND_IDS = ["pybe-0", "pybe-1", "pybe-2"]  # grpcio servers (tests/integration/echo_server.py): the -py rows


def log(msg=""):
    print(msg, flush=True)


def cpu_ticks(pid):
    """utime + stime of pid (all threads), in clock ticks."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def syscalls(pid):
    """(read, write) system calls of pid so far (/proc/PID/io syscr, syscw)."""
    r = w = 0
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith("syscr:"):
                    r = int(line.split()[1])
                elif line.startswith("syscw:"):
                    w = int(line.split()[1])
    except OSError:
        pass
    return r, w


def pin(pid, cpu, enabled):
    if enabled and NCPU >= 2:
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(pid)], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


def grpc_frame(payload_len):
    msg = peers.req(payload=b"x" * payload_len).SerializeToString()
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def reply_frame_len(addr, payload_len):
    """Size of the gRPC frame a backend replies with (one real call)."""
    ch = peers.channel(addr)
    try:
        rep = peers.echo_stub(ch).Unary(peers.req(payload=b"x" * payload_len), timeout=5)
    finally:
        ch.close()
    return 5 + len(rep.SerializeToString())


# ---------------------------------------------------------------- targets


class Target:
    def __init__(self, name, port, proc=None, backends=None):
        self.name = name
        self.port = port
        self.proc = proc  # peers.Proc of the proxy (None for direct)
        self.backends = backends  # the backends it balances over (their CPU is measured)
        self.runs = []
        self.verify = None
        self.n = None  # calls per run when not args.n (the grpcio rows: those servers are slower)
        self.expect = None  # reply frame size when not the C backends'

    @property
    def pid(self):
        return self.proc.pid if self.proc else None


def make_pki(tmp):
    """A CA and a server certificate for 127.0.0.1 (EC P-256), for the TLS rows."""
    d = os.path.join(tmp, "pki")
    os.makedirs(d, exist_ok=True)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    for argv in (["req", "-x509"] + newkey + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench ca"],
                 ["req"] + newkey + ["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=bench"],
                 ["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                  "-out", "server.pem", "-days", "2", "-extfile", "server.ext"]):
        subprocess.run(["openssl"] + argv, cwd=d, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=30)
    return {k: os.path.join(d, k) for k in ("ca.pem", "server.pem", "server.key")}


def haproxy_config(tmp, port, backends, streams, tls_ca=None):
    # tls_ca: TLS to the backends, verified against it, ALPN h2 (what sidelb's cluster "tls" does)
    opts = " ssl verify required ca-file %s alpn h2" % tls_ca if tls_ca else ""
    servers = "\n".join("    server b%d %s proto h2%s" % (i, b.addr, opts) for i, b in enumerate(backends))
    cfg = """global
    nbthread 1
    maxconn 5000
    tune.h2.max-concurrent-streams %d

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind 127.0.0.1:%d proto h2
    default_backend be

backend be
    balance roundrobin
    http-reuse always
%s
""" % (max(streams, 100), port, servers)
    path = os.path.join(tmp, "haproxy%s.cfg" % ("-tls" if tls_ca else ""))
    with open(path, "w") as f:
        f.write(cfg)
    return path


def nginx_config(tmp, port, backends, streams):
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(prefix, exist_ok=True)
    servers = "\n".join("        server %s;" % b.addr for b in backends)
    cfg = """daemon off;
master_process off;
worker_processes 1;
pid %(p)s/nginx.pid;
error_log %(p)s/error.log warn;
events { worker_connections 10000; }
http {
    access_log off;
    client_body_temp_path %(p)s/body;
    proxy_temp_path %(p)s/proxy;
    fastcgi_temp_path %(p)s/fastcgi;
    uwsgi_temp_path %(p)s/uwsgi;
    scgi_temp_path %(p)s/scgi;
    http2_max_concurrent_streams %(streams)d;
    keepalive_requests 1000000;
    upstream echo {
%(servers)s
        keepalive 1024;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:%(port)d http2;
        location / {
            grpc_pass grpc://echo;
        }
    }
}
""" % {"p": prefix, "servers": servers, "port": port, "streams": max(streams, 128)}
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w") as f:
        f.write(cfg)
    return path, prefix


def start_targets(args, tmp, backends, tls_backends=None, pki=None, py_backends=None):
    targets = []
    names = args.targets
    if "direct" in names:
        targets.append(Target("direct", backends[0].port, backends=backends[:1]))
    if "sidelb" in names:
        cfg = sidelb_harness.simple_config([b.addr for b in backends], max_connections_per_backend=2)
        cfg["listeners"][0]["max_concurrent_streams"] = 10000
        p = sidelb_harness.start_sidelb(cfg, log_level="notice")
        targets.append(Target("sidelb", p.port, p, backends))
    if args.before:
        # another sidelb binary (e.g. the previous commit) in the same run, for before/after figures
        cfg = sidelb_harness.simple_config([b.addr for b in backends], max_connections_per_backend=2)
        cfg["listeners"][0]["max_concurrent_streams"] = 10000
        p = sidelb_harness.start_sidelb(cfg, log_level="notice", binary=args.before, temp_state_dir=False)
        targets.append(Target("before", p.port, p, backends))
    if "haproxy" in names:
        port = peers.free_port()
        path = haproxy_config(tmp, port, backends, args.streams)
        p = peers.Proc(["haproxy", "-f", path, "-db"], name="haproxy", ready=None, port=port)
        targets.append(Target("haproxy", port, p, backends))
    if "nginx" in names:
        port = peers.free_port()
        path, prefix = nginx_config(tmp, port, backends, args.streams)
        p = peers.Proc(["nginx", "-p", prefix, "-c", path, "-e", os.path.join(prefix, "error.log")],
                       name="nginx", ready=None, port=port)
        targets.append(Target("nginx", port, p, backends))
    for name, workers in (("sidelb-w1", 1), ("sidelb-w2", 2), ("sidelb-w2-lr", 2)):
        # workers 1 vs 2 with the same CPUs (both): the rows above pin the proxy to CPU 0;
        # -lr: least_request + outlier detection, whose counters the workers share (atomics)
        if name in names:
            cfg = sidelb_harness.simple_config([b.addr for b in backends], max_connections_per_backend=2)
            cfg["listeners"][0]["max_concurrent_streams"] = 10000
            cfg["workers"] = workers
            if name.endswith("-lr"):
                cfg["clusters"][0]["policy"] = {"least_request": {}}
                cfg["clusters"][0]["outlier_detection"] = {"consecutive_failures": 5}
            p = sidelb_harness.start_sidelb(cfg, log_level="notice")
            targets.append(Target(name, p.port, p, backends))
    if "sidelb-py" in names:
        cfg = sidelb_harness.simple_config([b.addr for b in py_backends], max_connections_per_backend=2)
        cfg["listeners"][0]["max_concurrent_streams"] = 10000
        p = sidelb_harness.start_sidelb(cfg, log_level="notice")
        targets.append(Target("sidelb-py", p.port, p, py_backends))
    if "haproxy-py" in names:
        port = peers.free_port()
        path = haproxy_config(tmp, port, py_backends, args.streams)
        p = peers.Proc(["haproxy", "-f", path, "-db"], name="haproxy-py", ready=None, port=port)
        targets.append(Target("haproxy-py", port, p, py_backends))
    if "sidelb-tls" in names:
        cfg = sidelb_harness.simple_config([b.addr for b in tls_backends], max_connections_per_backend=2,
                                           tls={"ca_file": pki["ca.pem"]})
        cfg["listeners"][0]["max_concurrent_streams"] = 10000
        p = sidelb_harness.start_sidelb(cfg, log_level="notice")
        targets.append(Target("sidelb-tls", p.port, p, tls_backends))
    if "haproxy-tls" in names:
        port = peers.free_port()
        path = haproxy_config(tmp, port, tls_backends, args.streams, tls_ca=pki["ca.pem"])
        p = peers.Proc(["haproxy", "-f", path, "-db"], name="haproxy-tls", ready=None, port=port)
        targets.append(Target("haproxy-tls", port, p, tls_backends))
    for t in targets:
        if t.proc:
            pin(t.pid, "0-1" if t.name.startswith("sidelb-w") else 0, args.pin)
    return targets


# ---------------------------------------------------------------- h2load

RE_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
RE_REQUESTS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                         r"(\d+) errored, (\d+) timeout")
RE_TRAFFIC = re.compile(r"traffic: .*?, .*?\((\d+)\) headers .*?, .*?\((\d+)\) data")
RE_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")


def to_us(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    i = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[i]


def run_h2load(args, target, body_path, tmp, n, backends, expect_data):
    logf = os.path.join(tmp, "h2load-%s.log" % target.name)
    argv = ["h2load", "-n", str(n), "-c", str(args.conns), "-m", str(args.streams), "-t", "1",
            "-d", body_path, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "--log-file", logf, "http://127.0.0.1:%d%s" % (target.port, PATH)]
    for h in getattr(args, "headers", ()):  # more request headers (frame_count.py --header)
        argv[1:1] = ["-H", h]
    if args.pin and NCPU >= 2:
        argv = ["taskset", "-c", "1"] + argv
    pcpu0 = cpu_ticks(target.pid) if target.pid else 0
    bcpu0 = sum(cpu_ticks(b.pid) for b in backends)
    bsys0 = [sum(x) for x in zip((0, 0), *(syscalls(b.pid) for b in backends))]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=args.run_timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += b"\n(h2load killed after %ds)" % args.run_timeout
    except BaseException:  # Ctrl-C / SIGTERM: never leave h2load behind
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        raise
    wall = time.monotonic() - t0
    pcpu1 = cpu_ticks(target.pid) if target.pid else 0
    bcpu1 = sum(cpu_ticks(b.pid) for b in backends)
    bsys1 = [sum(x) for x in zip((0, 0), *(syscalls(b.pid) for b in backends))]
    out = out.decode("utf-8", "replace")
    r = {"ok": False, "out": out, "wall": wall}
    m_req, m_fin = RE_REQUESTS.search(out), RE_FINISHED.search(out)
    if not (m_req and m_fin):
        r["why"] = "h2load output not understood (rc %s)" % proc.returncode
        return r
    r["succeeded"] = int(m_req.group(4))
    r["failed"] = int(m_req.group(5)) + int(m_req.group(6)) + int(m_req.group(7))
    r["rps"] = float(m_fin.group(3))
    m_time = RE_TIME.search(out)
    if m_time:
        r["mean_us"] = to_us(m_time.group(3))
        r["max_us"] = to_us(m_time.group(2))
    m_tr = RE_TRAFFIC.search(out)
    r["data"] = int(m_tr.group(2)) if m_tr else -1
    lat, non200 = [], 0
    try:
        with open(logf) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) < 3:
                    continue
                if cols[1] != "200":
                    non200 += 1
                    continue
                lat.append(int(cols[2]))
        os.unlink(logf)
    except OSError:
        pass
    lat.sort()
    r["p50_us"], r["p99_us"], r["p999_us"] = percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999)
    r["calls"] = r["succeeded"]
    r["proxy_us_per_call"] = ((pcpu1 - pcpu0) / CLK_TCK * 1e6 / r["calls"]) if (target.pid and r["calls"]) else None
    r["backend_us_per_call"] = (bcpu1 - bcpu0) / CLK_TCK * 1e6 / r["calls"] if r["calls"] else None
    # read/write system calls per call: the backends read what the proxy writes
    r["backend_reads_per_call"] = (bsys1[0] - bsys0[0]) / r["calls"] if r["calls"] else None
    r["backend_writes_per_call"] = (bsys1[1] - bsys0[1]) / r["calls"] if r["calls"] else None
    problems = []
    if r["succeeded"] != n or r["failed"]:
        problems.append("%d/%d succeeded, %d failed" % (r["succeeded"], n, r["failed"]))
    if non200:
        problems.append("%d non-200 in the log" % non200)
    if r["data"] != r["succeeded"] * expect_data:
        problems.append("DATA bytes %d != %d calls x %d (some calls got no reply message: gRPC errors?)"
                        % (r["data"], r["succeeded"], expect_data))
    if problems:
        r["why"] = "; ".join(problems)
    else:
        r["ok"] = True
    return r


def verify_grpc(target, calls=200, payload=16):
    """calls unary calls with the python grpc client; all must be OK."""
    import grpc

    per_backend = collections.Counter()
    errors = collections.Counter()
    ch = peers.channel("127.0.0.1:%d" % target.port)
    try:
        stub = peers.echo_stub(ch)
        r = peers.req(payload=b"v" * payload)
        for _ in range(calls):
            try:
                rep = stub.Unary(r, timeout=5)
                if rep.payload != r.payload:
                    errors["bad payload"] += 1
                per_backend[rep.backend_id] += 1
            except grpc.RpcError as e:
                errors[e.code().name] += 1
    finally:
        ch.close()
    return {"ok": not errors and sum(per_backend.values()) == calls, "by_backend": dict(per_backend),
            "errors": dict(errors)}


def fmt_us(v):
    if v is None or v != v:
        return "-"
    return "%.0fus" % v if v < 10000 else "%.1fms" % (v / 1000)


def fmt_cpu(v):
    return "-" if v is None else "%.1fus" % v


def log_syscalls_table(targets, summary):
    """read()/write() system calls of the backends per call (medians): they read what the proxy
    writes, so fewer, fuller writes cost them less (/proc/PID/io counts read/write, not recv/send:
    right for the C backends, which use libuv's read/write)."""
    log("")
    log("%-8s %14s %14s" % ("target", "backend reads", "backend writes"))
    for t in targets:
        s = summary.get(t.name)
        if s:
            log("%-8s %14s %14s" % (t.name, *("-" if s[k] is None else "%.3f/call" % s[k] for k in (
                "backend_reads_per_call", "backend_writes_per_call"))))


def log_frames_table(args, names):
    """Frames and header bytes per call between the proxy and a backend, sidelb vs HAProxy
    (tests/bench/frame_count.py: a counting relay, calls one at a time, so the counts are exact)."""
    import frame_count

    names = [n for n in ("sidelb", "before", "haproxy") if n in names]
    if not names or not args.frames:
        return []
    calls = min(args.n, 2000)
    results = [frame_count.measure(n, calls=calls, warmup=200, payload=args.payload,
                                   binary=args.before if n == "before" else None) for n in names]
    log("")
    log("frames per call to and from a backend (%d calls one at a time after 200 warm-up, payload %d B;"
        " tests/bench/frame_count.py):" % (calls, args.payload))
    log(frame_count.format_table(results))
    return results


def median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="n=20000, 1 round")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per target (default 3)")
    ap.add_argument("--n", type=int, default=None, help="calls per h2load run (default 200000)")
    ap.add_argument("--conns", type=int, default=8, help="h2load -c")
    ap.add_argument("--streams", type=int, default=32, help="h2load -m (concurrent streams per connection)")
    ap.add_argument("--payload", type=int, default=16, help="request payload bytes")
    ap.add_argument("--targets", default="direct,sidelb,haproxy,nginx,sidelb-tls,haproxy-tls,sidelb-w1,sidelb-w2,sidelb-w2-lr,sidelb-py,haproxy-py")
    ap.add_argument("--py-n", type=int, default=None, help="calls per run of the -py rows (default n/20, >= 2000)")
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="no taskset pinning")
    ap.add_argument("--run-timeout", type=int, default=60, help="seconds per h2load run")
    ap.add_argument("--no-frames", dest="frames", action="store_false",
                    help="skip the frames-per-call table (frame_count.py)")
    ap.add_argument("--before", default=os.environ.get("SIDELB_BEFORE"),
                    help="path of another sidelb binary to run as target 'before' (default $SIDELB_BEFORE)")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.n = args.n or (20000 if args.quick else 200000)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    for tool in ("h2load", "haproxy", "nginx", "taskset"):
        if shutil.which(tool) is None and tool in (["h2load", "taskset"] + [t.split("-")[0] for t in args.targets]):
            log("bench: %s not found (make deps installs it)" % tool)
            return 1

    tmp = tempfile.mkdtemp(prefix="sidelb-bench-")
    stop_requested = []

    def on_signal(signum, frame):
        stop_requested.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    t_start = time.monotonic()
    failures = []
    try:
        body_path = os.path.join(tmp, "body.bin")
        with open(body_path, "wb") as f:
            f.write(grpc_frame(args.payload))

        # The request body must be a valid Echo call: h2load against a backend
        # with a stats file, which counts grpc-status OK replies.
        chk = peers.start_c_backend("bench-check", stats=True)
        tchk = Target("check", chk.port)
        r = run_h2load(args, tchk, body_path, tmp, 500, [chk], reply_frame_len(chk.addr, args.payload))
        st = chk.wait_stats(lambda s: s.get("calls", 0) >= 501, timeout=5)
        chk.stop()
        chk.remove_files()
        if not r["ok"] or st.get("ok") != 501:
            log("bench: the h2load request body is not accepted as a gRPC call: %s stats=%r\n%s"
                % (r.get("why"), st, r["out"]))
            return 1

        backends = [peers.start_c_backend(i, stats=False, extra_args=["--max-concurrent-streams", "100000"])
                    for i in BACKEND_IDS]
        expect_data = reply_frame_len(backends[0].addr, args.payload)
        tls_backends, pki = None, None
        if any(t.endswith("-tls") for t in args.targets):
            pki = make_pki(tmp)
            tls_backends = [peers.start_c_backend(i, stats=False,
                                                  extra_args=["--max-concurrent-streams", "100000", "--tls-cert",
                                                              pki["server.pem"], "--tls-key", pki["server.key"]])
                            for i in TLS_BACKEND_IDS]
        py_backends = None
        if any(t.endswith("-py") for t in args.targets):
            py_backends = [peers.start_py_backend(i) for i in PY_BACKEND_IDS]
        targets = start_targets(args, tmp, backends, tls_backends, pki, py_backends)
        for t in targets:
            if t.name.endswith("-py"):
                t.n = args.py_n or max(2000, args.n // 20)
                t.expect = reply_frame_len(py_backends[0].addr, args.payload)
        log("sidelb bench: %d calls/run, %d rounds, h2load -c %d -m %d -t 1, payload %d B, %d CPUs%s"
            % (args.n, args.rounds, args.conns, args.streams, args.payload, NCPU,
               ", h2load pinned to CPU 1, proxy to CPU 0" if args.pin and NCPU >= 2 else ""))
        log("backends: %s (C test_backend, no stats); direct = %s only"
            % (", ".join(b.addr for b in backends), backends[0].addr))
        if tls_backends:
            log("TLS backends (h2 over TLS, for the -tls rows): %s" % ", ".join(b.addr for b in tls_backends))

        # warm-up: connections, pools, caches
        if py_backends:
            log("grpcio backends (python3-grpcio, for the -py rows, %d calls a run): %s"
                % (max(2000, args.n // 20) if not args.py_n else args.py_n, ", ".join(b.addr for b in py_backends)))
        for t in targets:
            run_h2load(args, t, body_path, tmp, min(2000, t.n or args.n), t.backends, t.expect or expect_data)

        for rnd in range(args.rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                r = run_h2load(args, t, body_path, tmp, t.n or args.n, t.backends, t.expect or expect_data)
                t.runs.append(r)
                if r["ok"]:
                    log("round %d %-11s %9.0f calls/s  p50 %7s  p99 %7s  proxy CPU %s/call"
                        % (rnd + 1, t.name, r["rps"], fmt_us(r["p50_us"]), fmt_us(r["p99_us"]),
                           fmt_cpu(r["proxy_us_per_call"])))
                else:
                    failures.append("%s round %d: %s" % (t.name, rnd + 1, r["why"]))
                    log("round %d %-11s FAILED: %s\n%s" % (rnd + 1, t.name, r["why"], r["out"][-1500:]))
                if t.proc and not t.proc.alive():
                    failures.append("%s exited during the run:\n%s" % (t.name, t.proc.log()[-2000:]))
                    targets.remove(t)

        for t in targets:
            t.verify = verify_grpc(t)
            if not t.verify["ok"]:
                failures.append("%s: grpc verification failed: %r" % (t.name, t.verify))

        # table: medians over the rounds
        log("")
        log("%-12s %10s %8s %8s %8s %8s %12s %12s %9s %9s  %s" % (
            "target", "calls/s", "p50", "p99", "p99.9", "mean", "proxy CPU", "backend CPU", "calls/s", "p99",
            "grpc check (200 calls)"))
        log("%-12s %10s %8s %8s %8s %8s %12s %12s %9s %9s" % ("", "(median)", "", "", "", "", "per call",
                                                               "per call", "vs direct", "vs direct"))
        summary = {}
        direct = None
        for t in targets:
            ok = [r for r in t.runs if r["ok"]]
            if not ok:
                continue
            s = {k: median([r.get(k) for r in ok]) for k in
                 ("rps", "p50_us", "p99_us", "p999_us", "mean_us", "proxy_us_per_call", "backend_us_per_call",
                  "backend_reads_per_call", "backend_writes_per_call")}
            summary[t.name] = s
            if t.name == "direct":
                direct = s
        for t in targets:
            s = summary.get(t.name)
            if not s:
                continue
            v = t.verify or {}
            vtxt = ("OK " + " ".join("%s:%d" % kv for kv in sorted(v.get("by_backend", {}).items()))
                    if v.get("ok") else "FAIL %r" % v)
            rr = "%.2f" % (s["rps"] / direct["rps"]) if direct else "-"
            pr = "%.2f" % (s["p99_us"] / direct["p99_us"]) if direct and direct["p99_us"] else "-"
            log("%-12s %10.0f %8s %8s %8s %8s %12s %12s %9s %9s  %s" % (
                t.name, s["rps"], fmt_us(s["p50_us"]), fmt_us(s["p99_us"]), fmt_us(s["p999_us"]), fmt_us(s["mean_us"]),
                fmt_cpu(s["proxy_us_per_call"]), fmt_cpu(s["backend_us_per_call"]),
                rr, pr, vtxt))
        log_syscalls_table(targets, summary)
        parts = []
        for name in ("sidelb", "before", "haproxy", "nginx"):
            s = summary.get(name)
            if not s:
                continue
            ratio = "%.2f" % (s["rps"] / direct["rps"]) if direct else "-"
            cpu = "%.1f" % s["proxy_us_per_call"] if s["proxy_us_per_call"] is not None else "-"
            if name == "sidelb":
                parts.append("sidelb/direct calls/s ratio: %s; sidelb CPU/call: %s µs" % (ratio, cpu))
            else:
                parts.append("%s: ratio %s, CPU/call %s µs" % (name, ratio, cpu))
        log("")
        log("; ".join(parts))
        if "sidelb" in summary and "haproxy" in summary and "nginx" in summary:
            s = summary["sidelb"]
            log("sidelb vs haproxy: calls/s x%.2f, CPU/call x%.2f; vs nginx: calls/s x%.2f, CPU/call x%.2f" % (
                s["rps"] / summary["haproxy"]["rps"],
                s["proxy_us_per_call"] / max(summary["haproxy"]["proxy_us_per_call"], 1e-9),
                s["rps"] / summary["nginx"]["rps"],
                s["proxy_us_per_call"] / max(summary["nginx"]["proxy_us_per_call"], 1e-9)))
        if "sidelb-tls" in summary and "haproxy-tls" in summary:
            s, h = summary["sidelb-tls"], summary["haproxy-tls"]
            log("TLS to backends: sidelb-tls %.0f calls/s, %.1f µs CPU/call; haproxy-tls %.0f calls/s, %.1f µs "
                "CPU/call; sidelb vs haproxy: calls/s x%.2f, CPU/call x%.2f" % (
                    s["rps"], s["proxy_us_per_call"], h["rps"], h["proxy_us_per_call"], s["rps"] / h["rps"],
                    s["proxy_us_per_call"] / max(h["proxy_us_per_call"], 1e-9)))
        if "sidelb" in summary and "sidelb-tls" in summary:
            s, t = summary["sidelb"], summary["sidelb-tls"]
            log("sidelb TLS vs h2c to the backends: calls/s x%.2f, CPU/call +%.1f µs" % (
                t["rps"] / s["rps"], t["proxy_us_per_call"] - s["proxy_us_per_call"]))
        if "sidelb-w1" in summary and "sidelb-w2" in summary:
            a, b = summary["sidelb-w1"], summary["sidelb-w2"]
            log("workers 2 vs 1 (both may use CPUs 0-1, h2load on CPU 1, the backends float): calls/s x%.2f, "
                "CPU/call x%.2f, p99 %s vs %s" % (b["rps"] / a["rps"], b["proxy_us_per_call"] /
                                                  max(a["proxy_us_per_call"], 1e-9), fmt_us(b["p99_us"]),
                                                  fmt_us(a["p99_us"])))
        if "sidelb-w2" in summary and "sidelb-w2-lr" in summary:
            a, b = summary["sidelb-w2"], summary["sidelb-w2-lr"]
            log("workers 2, least_request + outlier detection (shared atomics) vs round_robin: calls/s x%.2f, "
                "CPU/call x%.2f" % (b["rps"] / a["rps"], b["proxy_us_per_call"] / max(a["proxy_us_per_call"], 1e-9)))
        if "sidelb-py" in summary and "haproxy-py" in summary:
            s, h = summary["sidelb-py"], summary["haproxy-py"]
            log("grpcio backends: sidelb %.0f calls/s, %.1f µs proxy CPU/call, backends %.1f µs/call; haproxy %.0f "
                "calls/s, %.1f µs, backends %.1f µs/call" % (
                    s["rps"], s["proxy_us_per_call"], s["backend_us_per_call"], h["rps"], h["proxy_us_per_call"],
                    h["backend_us_per_call"]))
        if "sidelb" in summary and "before" in summary:
            s, b = summary["sidelb"], summary["before"]
            log("sidelb vs before: calls/s x%.3f, CPU/call x%.3f" % (
                s["rps"] / b["rps"], s["proxy_us_per_call"] / max(b["proxy_us_per_call"], 1e-9)))
        log_frames_table(args, [t.name for t in targets])
        log("(medians of %d rounds; latency from h2load --log-file; CPU from /proc/PID/stat; %.0fs total)"
            % (args.rounds, time.monotonic() - t_start))
    except KeyboardInterrupt:
        failures.append("interrupted")
    except Exception as e:  # report, then clean up
        failures.append("%s: %s" % (type(e).__name__, e))
    finally:
        for p in peers.stop_all():
            p.remove_files()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        log("")
        for f in failures:
            log("FAIL " + f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
