#!/usr/bin/python3
"""sidelb live demo: etcd registration + discovery, real gRPC traffic (~35 s).

    SIDELB_BUILD=build /usr/bin/python3 tests/demo.py      (make demo)

Starts, all on 127.0.0.1 in a temp dir:
  - etcd-server (/usr/bin/etcd) on free ports;
  - 3 C test backends, ids backend-A, backend-B, backend-C;
  - a "server-side" sidelb that registers the 3 backends in etcd under
    /grpclb/sidelb.test.Echo/ (lease ttl 3 s, grpc.health.v1 check of each);
  - a "client-side" sidelb whose cluster discovers its backends from that
    etcd prefix and balances per call, round robin.
A client thread sends sidelb.test.Echo/Unary calls through the client-side
sidelb (rounds of 30) and the demo prints where each round went while it
changes the world: a backend turns NOT_SERVING and back, one is killed, etcd
is stopped and restarted, the killed backend comes back. Each step is checked;
exit status 0 when every step behaved as expected, 1 (with the reason)
otherwise. Every process is stopped by PID, also on failure or Ctrl-C.

--python-registrar: a python thread does the registration instead of the
server-side sidelb (for a sidelb built without `register` support).
"""

import base64
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
import grpc  # noqa: E402
import peers  # noqa: E402
import sidelb_harness  # noqa: E402

PREFIX = "/grpclb/sidelb.test.Echo/"
IDS = ["backend-A", "backend-B", "backend-C"]
ROUND_CALLS = 30
ROUND_PERIOD = 0.6  # seconds per round of 30 calls (calls paced evenly)
T0 = time.monotonic()


class StepFailed(Exception):
    pass


def say(msg=""):
    try:
        print(msg, flush=True)
    except BrokenPipeError:  # e.g. `make demo | head`: keep going, so the cleanup still runs
        sys.stdout = open(os.devnull, "w")


def ts():
    return "[%5.1fs]" % (time.monotonic() - T0)


def step(title):
    say("")
    say("%s === %s" % (ts(), title))


# ------------------------------------------------------------------ etcd


class Etcd:
    def __init__(self, tmp):
        self.client_port = peers.free_port()
        self.peer_port = peers.free_port()
        self.url = "http://127.0.0.1:%d" % self.client_port
        peer = "http://127.0.0.1:%d" % self.peer_port
        argv = ["/usr/bin/etcd", "--name", "demo", "--data-dir", os.path.join(tmp, "etcd"),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", "demo=" + peer, "--initial-cluster-state", "new",
                "--log-level", "warn"]
        self.proc = peers.Proc(argv, name="etcd", ready=None, port=self.client_port, timeout=20)
        self.wait_healthy()

    def wait_healthy(self, timeout=15):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                self.keys()
                return
            except Exception:
                time.sleep(0.1)
        raise StepFailed("etcd at %s not answering after %ds:\n%s" % (self.url, timeout, self.proc.log()[-2000:]))

    def keys(self):
        """{key: value} under PREFIX, through the v3 JSON gateway."""
        end = PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)
        body = json.dumps({"key": base64.b64encode(PREFIX.encode()).decode(),
                           "range_end": base64.b64encode(end.encode()).decode()}).encode()
        r = urllib.request.urlopen(urllib.request.Request(self.url + "/v3/kv/range", data=body), timeout=1)
        out = json.loads(r.read().decode())
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in out.get("kvs", [])}

    def show(self, names):
        """Prints `etcdctl get --prefix` for the demo's prefix."""
        say("%s $ etcdctl get --prefix %s" % (ts(), PREFIX))
        if not self.proc.alive():
            say("    (etcd is down)")
            return
        env = dict(os.environ, ETCDCTL_API="3")
        try:
            out = subprocess.run(["etcdctl", "--endpoints", self.url, "--dial-timeout", "1s",
                                  "--command-timeout", "2s", "get", "--prefix", PREFIX], env=env,
                                 capture_output=True, timeout=5).stdout.decode()
        except subprocess.TimeoutExpired:
            out = "(etcdctl timed out)\n"
        lines = out.splitlines()
        if not lines:
            say("    (no keys)")
        for i in range(0, len(lines), 2):
            key = lines[i]
            val = lines[i + 1] if i + 1 < len(lines) else ""
            say("    %-40s %-22s (%s)" % (key, val, names.get(key[len(PREFIX):], "?")))


class PyRegistrar(threading.Thread):
    """Stand-in for the server-side sidelb's `register` (--python-registrar):
    health-checks each backend every 250 ms, keeps a 3 s lease per SERVING
    backend with its key, deletes the key when it is not SERVING. Only for
    trying the demo on a sidelb without registration support."""

    def __init__(self, etcd, addrs):
        super().__init__(daemon=True)
        self.etcd, self.addrs = etcd, addrs
        self.leases = {}  # addr -> (lease id, last keepalive)
        self.stopping = threading.Event()

    def call(self, path, body):
        req = urllib.request.Request(self.etcd.url + path, data=json.dumps(body).encode())
        return json.loads(urllib.request.urlopen(req, timeout=0.5).read().decode())

    def run(self):
        chans = {a: peers.channel(a) for a in self.addrs}
        try:
            while not self.stopping.wait(0.25):
                for a in self.addrs:
                    try:
                        serving = peers.health_stub(chans[a]).Check(
                            peers.health_pb2.HealthCheckRequest(service=""), timeout=0.25).status == 1
                    except grpc.RpcError:
                        serving = False
                    k = base64.b64encode((PREFIX + a).encode()).decode()
                    try:
                        if serving and a not in self.leases:
                            lid = self.call("/v3/lease/grant", {"TTL": 3})["ID"]
                            self.call("/v3/kv/put", {"key": k, "value": base64.b64encode(a.encode()).decode(),
                                                     "lease": lid})
                            self.leases[a] = (lid, time.monotonic())
                        elif serving and time.monotonic() - self.leases[a][1] > 1.0:
                            out = self.call("/v3/lease/keepalive", {"ID": self.leases[a][0]})
                            if int(out.get("result", {}).get("TTL", "0")) <= 0:
                                del self.leases[a]  # lost: re-created next time
                            else:
                                self.leases[a] = (self.leases[a][0], time.monotonic())
                        elif not serving and a in self.leases:
                            self.call("/v3/kv/deleterange", {"key": k})
                            self.call("/v3/lease/revoke", {"ID": self.leases.pop(a)[0]})
                    except Exception:
                        self.leases.pop(a, None)  # etcd down: register again when it is back
        finally:
            for c in chans.values():
                c.close()


# ------------------------------------------------------------------ traffic


class Traffic(threading.Thread):
    """Calls Echo/Unary through the client-side sidelb in rounds of 30."""

    def __init__(self, target):
        super().__init__(daemon=True)
        self.target = target
        self.lock = threading.Lock()
        self.rounds = []  # dicts: n, start, end, counts, errors
        self.last_seen = {}  # backend id -> time of its last reply
        self.errors = []  # (time, code, details)
        self.stopping = threading.Event()

    def run(self):
        ch = peers.channel(self.target)
        stub = peers.echo_stub(ch)
        r = peers.req(payload=b"demo")
        n = 0
        try:
            while not self.stopping.is_set():
                n += 1
                start = time.monotonic()
                counts, errors = collections.Counter(), collections.Counter()
                for i in range(ROUND_CALLS):
                    if self.stopping.is_set():
                        return
                    try:
                        rep = stub.Unary(r, timeout=2)
                        counts[rep.backend_id] += 1
                        with self.lock:
                            self.last_seen[rep.backend_id] = time.monotonic()
                    except grpc.RpcError as e:
                        errors[e.code().name] += 1
                        with self.lock:
                            self.errors.append((time.monotonic(), e.code().name, e.details()))
                    pause = start + (i + 1) * ROUND_PERIOD / ROUND_CALLS - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                with self.lock:
                    self.rounds.append({"n": n, "start": start, "end": time.monotonic(), "counts": counts,
                                        "errors": errors})
        finally:
            ch.close()


class Demo:
    def __init__(self, tmp):
        self.tmp = tmp
        self.printed = 0
        self.traffic = None
        self.results = []  # (step, ok, detail)

    # -- rounds
    def flush_rounds(self):
        if self.traffic is None:
            return
        with self.traffic.lock:
            new = self.traffic.rounds[self.printed:]
            self.printed = len(self.traffic.rounds)
        for r in new:
            parts = ", ".join("%s %d" % (b, r["counts"].get(b, 0)) for b in IDS)
            err = sum(r["errors"].values())
            say("%s round %3d: %s%s" % (ts(), r["n"], parts,
                                         ("   ERRORS %s" % dict(r["errors"])) if err else ""))

    def sleep(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(min(0.05, max(0, end - time.monotonic())))
            self.flush_rounds()

    def rounds_after(self, t):
        with self.traffic.lock:
            return [r for r in self.traffic.rounds if r["start"] >= t]

    def wait_rounds_after(self, t, count=2, timeout=10):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rs = self.rounds_after(t)
            if len(rs) >= count:
                self.flush_rounds()
                return rs[:count]
            self.sleep(0.05)
        raise StepFailed("no traffic rounds completed (client thread stuck?)")

    def errors_since(self, t):
        with self.traffic.lock:
            return [e for e in self.traffic.errors if e[0] >= t]

    # -- etcd keys
    def wait_keys(self, etcd, pred, what, timeout):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                last = set(etcd.keys())
                if pred(last):
                    return time.monotonic()
            except Exception as e:  # etcd down or restarting
                last = "error: %s" % e
            self.sleep(0.05)
        raise StepFailed("%s: not seen in etcd within %.0fs (keys: %s)" % (what, timeout, last))


def expect_spread(rounds, expected, tol=2):
    """Every round in rounds has exactly the expected backends, each within tol."""
    for r in rounds:
        got = {b: r["counts"].get(b, 0) for b in IDS}
        for b in IDS:
            want = expected.get(b, 0)
            if abs(got[b] - want) > (tol if want else 0):
                return "round %d: %s (expected %s)" % (r["n"], got, {b: expected.get(b, 0) for b in IDS})
        if r["errors"]:
            return "round %d had failed calls: %s" % (r["n"], dict(r["errors"]))
    return None


def static_act(demo):
    """Act 0: conf/sidelb.json as shipped (static backends, no etcd)."""
    step("0. conf/sidelb.json as shipped: three static backends, no etcd, per-call round robin")
    import socket
    conf = os.path.join(HERE, "..", "conf", "sidelb.json")
    busy = []
    for port in (50051, 50052, 50053, 15001, 9901):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(port)
    if busy:
        say("skipped: ports %s are in use on this machine" % busy)
        return
    first = len(peers._procs)
    bes = [peers.start_c_backend("static-" + n, port=p) for n, p in zip("ABC", (50051, 50052, 50053))]
    slb = peers.Proc([peers.binary("sidelb"), "-c", conf], name="sidelb-static", ready=r"sidelb \S+ ready")
    say("sidelb -c conf/sidelb.json (pid %d); backends on 50051-50053; apps dial 127.0.0.1:15001" % slb.pid)
    stub = peers.echo_stub("127.0.0.1:15001")
    counts = collections.Counter(stub.Unary(peers.req(payload=b"hi"), timeout=5).backend_id for _ in range(30))
    say("30 calls on one channel: %s" % ", ".join("%s %d" % kv for kv in sorted(counts.items())))
    metrics = urllib.request.urlopen("http://127.0.0.1:9901/metrics", timeout=5).read().decode()
    say("admin /metrics: " + [l for l in metrics.splitlines() if l.startswith("sidelb_calls_total{")][0])
    if counts != {"static-A": 10, "static-B": 10, "static-C": 10}:
        raise StepFailed("static round robin gave %r" % dict(counts))
    demo.results.append(("conf/sidelb.json: 30 calls -> 10/10/10", True, ""))
    for p in peers.stop_all(first):
        p.remove_files()


def main():
    py_registrar = "--python-registrar" in sys.argv[1:]
    for tool in ("/usr/bin/etcd", "etcdctl"):
        if shutil.which(tool) is None:
            say("demo: %s not found (make deps installs etcd-server and etcd-client)" % tool)
            return 1
    tmp = tempfile.mkdtemp(prefix="sidelb-demo-")
    demo = Demo(tmp)
    failure = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    procs = {}
    registrar = None
    try:
        static_act(demo)
        step("setup")
        etcd = Etcd(tmp)
        say("etcd %s, data dir in %s (pid %d)" % (etcd.url, tmp, etcd.proc.pid))
        backends = {i: peers.start_c_backend(i) for i in IDS}
        names = {b.addr: i for i, b in backends.items()}
        for i, b in backends.items():
            say("%s  C test backend on %s (pid %d)" % (i, b.addr, b.pid))
        etcd_cfg = {"endpoints": [etcd.url], "dial_timeout_ms": 500, "request_timeout_ms": 1000}

        # server-side sidelb: registers the local backends (they know nothing about etcd)
        server_cfg = {
            "log_level": "notice",
            "etcd": etcd_cfg,
            "listeners": [{"name": "inbound", "address": "127.0.0.1:%d" % peers.free_port(),
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "local"}]}],
            "clusters": [{"name": "local", "discovery": {"static": [b.addr for b in backends.values()]}}],
            "register": [{"prefix": PREFIX, "address": b.addr, "ttl_s": 3,
                          "health_check": {"service": "", "interval_ms": 250, "timeout_ms": 250}}
                         for b in backends.values()],
        }
        client_cfg = {
            "log_level": "notice",
            "etcd": etcd_cfg,
            "listeners": [{"name": "outbound", "address": "127.0.0.1:%d" % peers.free_port(),
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
            "clusters": [{
                "name": "echo",
                "discovery": {"etcd_prefix": PREFIX},
                "policy": {"round_robin": {}},
                "connect_timeout_ms": 500,
                "backoff": {"initial_ms": 100, "max_ms": 1000},
                "service_config": {"methodConfig": [{
                    "name": [{"service": "sidelb.test.Echo"}],
                    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}}],
        }
        if py_registrar:
            del server_cfg["register"]
            registrar = PyRegistrar(etcd, [b.addr for b in backends.values()])
            registrar.start()
            say("(--python-registrar: a python thread registers the backends instead of sidelb)")
        procs["server"] = sidelb_harness.start_sidelb(server_cfg, log_level="notice")
        say("server-side sidelb (pid %d): registers the 3 backends under %s, ttl 3 s, health-checked"
            % (procs["server"].pid, PREFIX))
        procs["client"] = sidelb_harness.start_sidelb(client_cfg, log_level="notice")
        client_addr = "127.0.0.1:%d" % procs["client"].port
        say("client-side sidelb (pid %d): apps dial %s; cluster 'echo' = etcd prefix %s, round robin"
            % (procs["client"].pid, client_addr, PREFIX))

        addr = {i: b.addr for i, b in backends.items()}
        key = {i: PREFIX + a for i, a in addr.items()}

        step("1. all three backends registered -> calls spread evenly")
        demo.wait_keys(etcd, lambda k: set(key.values()) <= k, "3 registrations", 10)
        etcd.show(names)
        demo.traffic = Traffic(client_addr)
        demo.traffic.start()
        t = time.monotonic()
        rs = demo.wait_rounds_after(t, 3)
        why = expect_spread(rs[1:], {"backend-A": 10, "backend-B": 10, "backend-C": 10})
        if why:
            raise StepFailed("even spread: " + why)
        demo.results.append(("even spread over A, B, C", True, ""))

        step("2. backend-B turns NOT_SERVING (SIGUSR1) -> its key leaves etcd, A and C take its share")
        t_sig = time.monotonic()
        backends["backend-B"].set_health(False)
        t_key = demo.wait_keys(etcd, lambda k: key["backend-B"] not in k, "backend-B's key withdrawn", 5)
        say("%s backend-B's key withdrawn %.2fs after SIGUSR1" % (ts(), t_key - t_sig))
        etcd.show(names)
        rs = demo.wait_rounds_after(t_key + 1.0, 2)
        with demo.traffic.lock:
            last_b = demo.traffic.last_seen.get("backend-B", 0)
        lag = max(0.0, last_b - t_key)
        say("%s backend-B's last call was %.2fs after its key left etcd" % (ts(), lag))
        if lag > 1.0:
            raise StepFailed("backend-B still got calls %.2fs after its key left etcd (> 1 s)" % lag)
        why = expect_spread(rs, {"backend-A": 15, "backend-C": 15})
        if why:
            raise StepFailed("after B left: " + why)
        demo.results.append(("B NOT_SERVING: key withdrawn in %.1fs, traffic moved in %.2fs" % (t_key - t_sig, lag),
                             True, ""))

        step("3. backend-B SERVING again (SIGUSR2) -> re-registered, even spread again")
        t_sig = time.monotonic()
        backends["backend-B"].set_health(True)
        t_key = demo.wait_keys(etcd, lambda k: key["backend-B"] in k, "backend-B's key back", 5)
        say("%s backend-B's key back %.2fs after SIGUSR2" % (ts(), t_key - t_sig))
        etcd.show(names)
        rs = demo.wait_rounds_after(t_key + 1.0, 2)
        why = expect_spread(rs, {"backend-A": 10, "backend-B": 10, "backend-C": 10})
        if why:
            raise StepFailed("after B returned: " + why)
        demo.results.append(("B SERVING again: key back in %.1fs, even spread" % (t_key - t_sig), True, ""))

        step("4. backend-C killed (SIGKILL) -> no failed calls, its key vanishes, A and B share")
        t_kill = time.monotonic()
        backends["backend-C"].kill9()
        say("%s backend-C (pid %d) killed" % (ts(), backends["backend-C"].pid))
        t_key = demo.wait_keys(etcd, lambda k: key["backend-C"] not in k, "backend-C's key gone", 8)
        say("%s backend-C's key gone %.2fs after the kill (health check / lease)" % (ts(), t_key - t_kill))
        etcd.show(names)
        rs = demo.wait_rounds_after(t_key + 1.0, 2)
        errs = demo.errors_since(t_kill)
        if errs:
            raise StepFailed("%d calls failed after backend-C was killed, first: %s" % (len(errs), errs[0][1:]))
        why = expect_spread(rs, {"backend-A": 15, "backend-B": 15})
        if why:
            raise StepFailed("after C was killed: " + why)
        demo.results.append(("C killed: 0 failed calls, key gone in %.1fs" % (t_key - t_kill), True, ""))

        step("5. etcd stopped -> calls keep flowing on the last known table")
        t_stop = time.monotonic()
        etcd.proc.stop()
        say("%s etcd stopped" % ts())
        etcd.show(names)
        demo.sleep(3.0)
        rs = demo.wait_rounds_after(t_stop + 0.5, 2)
        errs = demo.errors_since(t_stop)
        if errs:
            raise StepFailed("%d calls failed while etcd was down, first: %s" % (len(errs), errs[0][1:]))
        why = expect_spread(rs, {"backend-A": 15, "backend-B": 15})
        if why:
            raise StepFailed("while etcd was down: " + why)
        if not (procs["client"].alive() and procs["server"].alive()):
            raise StepFailed("a sidelb exited while etcd was down")
        demo.results.append(("etcd down: calls kept flowing, 0 failed", True, ""))

        step("6. etcd restarted -> registrations come back, traffic unchanged")
        t_start = time.monotonic()
        etcd.proc.restart()
        etcd.wait_healthy()
        say("%s etcd back on %s" % (ts(), etcd.url))
        t_key = demo.wait_keys(etcd, lambda k: key["backend-A"] in k and key["backend-B"] in k
                               and key["backend-C"] not in k, "A and B registered, C not", 15)
        say("%s registrations in place %.2fs after the restart" % (ts(), t_key - t_start))
        etcd.show(names)
        rs = demo.wait_rounds_after(t_key + 0.5, 2)
        errs = demo.errors_since(t_stop)
        if errs:
            raise StepFailed("%d calls failed around the etcd restart, first: %s" % (len(errs), errs[0][1:]))
        why = expect_spread(rs, {"backend-A": 15, "backend-B": 15})
        if why:
            raise StepFailed("after etcd restart: " + why)
        demo.results.append(("etcd restarted: A, B re-registered in %.1fs, 0 failed" % (t_key - t_start), True, ""))

        step("7. backend-C restarted on its port -> registered again, gets its share back")
        t_start = time.monotonic()
        backends["backend-C"].restart()
        say("%s backend-C back on %s (pid %d)" % (ts(), backends["backend-C"].addr, backends["backend-C"].pid))
        t_key = demo.wait_keys(etcd, lambda k: key["backend-C"] in k, "backend-C's key back", 8)
        say("%s backend-C's key back %.2fs after its restart" % (ts(), t_key - t_start))
        etcd.show(names)
        rs = demo.wait_rounds_after(t_key + 1.0, 2)
        why = expect_spread(rs, {"backend-A": 10, "backend-B": 10, "backend-C": 10})
        if why:
            raise StepFailed("after C returned: " + why)
        errs = demo.errors_since(t_kill)
        demo.results.append(("C restarted: key back in %.1fs, even spread" % (t_key - t_start), True, ""))
        if errs:
            raise StepFailed("%d failed calls since backend-C was killed" % len(errs))
    except StepFailed as e:
        failure = str(e)
    except KeyboardInterrupt:
        failure = "interrupted"
    except Exception as e:
        failure = "%s: %s" % (type(e).__name__, e)
    finally:
        if demo.traffic:
            demo.traffic.stopping.set()
            demo.traffic.join(5)
        if registrar:
            registrar.stopping.set()
            registrar.join(5)
            try:
                demo.flush_rounds()
            except Exception:
                pass
        if failure:
            for name in ("client", "server"):
                p = procs.get(name)
                if p:
                    say("\n--- %s-side sidelb log (tail) ---\n%s" % (name, p.log()[-2500:]))
        for p in peers.stop_all():
            p.remove_files()
        shutil.rmtree(tmp, ignore_errors=True)

    say("")
    say("=== summary (%.0fs)" % (time.monotonic() - T0))
    for title, ok, _ in demo.results:
        say("  ok    %s" % title)
    if demo.traffic:
        with demo.traffic.lock:
            total = sum(sum(r["counts"].values()) for r in demo.traffic.rounds)
            nerr = len(demo.traffic.errors)
        say("  %d calls through the client-side sidelb, %d failed" % (total, nerr))
    if failure:
        say("  FAIL  %s" % failure)
        say("demo: FAILED")
        return 1
    say("demo: every step behaved as expected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
