"""Lifecycle soak: sidelb under steady gRPC load for SIDELB_SOAK_SECONDS
(default 60) while everything around it changes.

Real parts: etcd-server (the cluster is discovered from an etcd prefix), five
C test backends and one grpcio backend, grpcio clients in threads, sidelb
with an admin listener. `make check` runs this against the ASan + UBSan
build (`make asan`); conftest.py fails the test when any process printed a
sanitizer report.

Load (one channel per thread, every call with a deadline):
  unary              small calls, deadline 10 s            -> OK or UNAVAILABLE (from sidelb)
  unary_deadline     backend delay > deadline (20-150 ms)  -> DEADLINE_EXCEEDED
  unary_cancel       cancelled by the client mid-call      -> CANCELLED
  unary_large        2-4 replies of 64 KiB..1 MiB at once  -> OK or UNAVAILABLE (from sidelb)
  stream             long server streams (100-400 replies, slow reader),
                     30 % cancelled by the client part way
  bidi               5-25 requests 20-60 ms apart, 20 % cancelled part way
Chaos, from one thread, seeded (SIDELB_SOAK_SEED to replay a run):
  etcd adds, removes and weight changes of backends (JSON values);
  health flips (grpc.health.v1 NOT_SERVING for 0.5-2.5 s);
  SIGHUP every 2-4 s, alternating policy / pool size / health interval,
    half of them just after removing a backend that carries calls;
  a C backend killed (SIGKILL or SIGTERM) and restarted every ~5 s.
At least two backends stay registered, alive and SERVING throughout, so a
call with a generous deadline has no excuse to run into it. sidelb runs with
--grace-ms 2000: a reload's old server cuts the longest streams, so removed
backends still carry calls when it is torn down.

At the end: every call started ended with a gRPC status, and with one its
kind allows (a generous deadline expiring counts as a call lost inside
sidelb); OK streams carried every reply in order; sidelb_calls_in_flight
and every backend's outstanding/waiting count go back to 0; sidelb still
serves; SIGTERM makes it exit 0 within --grace-ms plus a margin.

`make check` runs it twice: against the plain -O2 build (`make test`), at
about twice the call rate, and against the ASan + UBSan build (`make asan`),
where the memory errors of these lifecycles show. SIDELB_SOAK_SECONDS=0
skips it (quick local runs).
"""

import collections
import json
import os
import random
import signal
import subprocess
import threading
import time
import traceback
import urllib.request

import grpc
import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import start_sidelb, with_test_workers

pytestmark = pytest.mark.serial  # a 60 s soak under load: it would load the machine under the others (conftest.py)

SOAK_S = float(os.environ.get("SIDELB_SOAK_SECONDS", "60"))  # 0 skips the soak
GRACE_MS = 2000  # reloads cut the longest streams: removed backends carry calls to the end
EXIT_MARGIN_S = 5.0
PREFIX = "/grpclb/soak/sidelb.test.Echo/"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

OK = grpc.StatusCode.OK
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE
CANCELLED = grpc.StatusCode.CANCELLED
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED

# What each kind of call may end with. DEADLINE_EXCEEDED for a call whose
# deadline is far beyond its work is a call sidelb lost (held until the
# client gave up).
ALLOWED = {
    "unary": {OK, UNAVAILABLE},
    "unary_deadline": {DEADLINE, UNAVAILABLE},
    "unary_cancel": {CANCELLED, UNAVAILABLE},
    "unary_large": {OK, UNAVAILABLE},
    "stream": {OK, UNAVAILABLE},
    "stream_cancel": {CANCELLED, UNAVAILABLE},
    "bidi": {OK, UNAVAILABLE},
    "bidi_cancel": {CANCELLED, UNAVAILABLE},
}
# Calls far shorter than --grace-ms: an UNAVAILABLE must be sidelb's own
# status ("sidelb: connection to backend ... lost", ...). A transport error
# ("Socket closed", "Connection reset by peer") means sidelb dropped the app's
# connection under them: each client thread has a connection of its own, and
# only streams may outlive the grace period of a reload's old server. (A
# stream refused by a reload's GOAWAY is the client's to retry: allowed.)
SHORT_KINDS = {"unary", "unary_deadline", "unary_cancel", "unary_large"}


def config(etcd_url, port, admin_port, variant):
    """Reload variants differ in policy, connection pool and health interval."""
    policy = [{"weighted_round_robin": {}}, {"least_request": {"choice_count": 2}},
              {"round_robin": {}}][variant % 3]
    retry = {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.05s", "backoffMultiplier": 2,
             "retryableStatusCodes": ["UNAVAILABLE"]}
    cluster = {"name": "echo", "discovery": {"etcd_prefix": PREFIX}, "policy": policy,
               "max_connections_per_backend": 1 + variant % 2,
               "connect_timeout_ms": 1000, "wait_for_ready_ms": 2000,
               "backoff": {"initial_ms": 100, "max_ms": 500, "min_connect_timeout_ms": 1000},
               "health_check": {"interval_ms": 200 + 100 * (variant % 2), "timeout_ms": 500},
               "service_config": {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}],
                                                    "retryPolicy": retry}]}}
    return {"etcd": {"endpoints": [etcd_url], "dial_timeout_ms": 500, "request_timeout_ms": 1000},
            "listeners": [{"name": "soak", "address": "127.0.0.1:%d" % port,
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
            "clusters": [cluster],
            "admin": {"address": "127.0.0.1:%d" % admin_port}}


def sanitizer_excerpt(text, lines=30):
    """The first sanitizer report in a log, its head only."""
    idx = [text.find(m) for m in SANITIZER_MARKS if m in text]
    if not idx:
        return ""
    start = text.rfind("\n", 0, min(idx)) + 1
    return "\n".join(text[start:].splitlines()[:lines])


def admin_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=3) as r:
        return r.read().decode()


def held_calls(admin_port):
    """(calls in flight, [(backend, outstanding)] with outstanding > 0, waiting calls)."""
    in_flight = None
    for line in admin_get(admin_port, "/metrics").splitlines():
        if line.startswith("sidelb_calls_in_flight "):
            in_flight = int(float(line.split()[1]))
    assert in_flight is not None, "no sidelb_calls_in_flight in /metrics"
    clusters = json.loads(admin_get(admin_port, "/clusters"))
    outstanding = [(b["address"], b["outstanding"]) for c in clusters for b in c["backends"] if b["outstanding"]]
    waiting = sum(c["waiting"] for c in clusters)
    return in_flight, outstanding, waiting


class Tally:
    """Calls started and ended, by kind and status; anything unexpected."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = collections.Counter()
        self.ended = collections.Counter()
        self.codes = collections.Counter()
        self.unexpected = collections.Counter()  # (kind, code, details)
        self.failures = collections.Counter()  # (kind, code, details) of UNAVAILABLE & co, for the summary
        self.broken = []  # OK calls with wrong content, non-gRPC exceptions

    def start(self, kind):
        with self.lock:
            self.started[kind] += 1

    def end(self, kind, code, details=""):
        with self.lock:
            self.ended[kind] += 1
            self.codes[(kind, code.name)] += 1
            if code not in ALLOWED[kind] or (code == UNAVAILABLE and kind in SHORT_KINDS and
                                             not (details or "").startswith("sidelb:") and
                                             "goaway" not in (details or "").lower()):
                self.unexpected[(kind, code.name, (details or "")[:80])] += 1
            elif code not in (OK, CANCELLED, DEADLINE):
                self.failures[(kind, code.name, (details or "")[:80])] += 1

    def bad(self, what):
        with self.lock:
            if len(self.broken) < 20:
                self.broken.append(what)


def call_unary(stub, rnd, t):
    r = rnd.random()
    if r < 0.6:
        kind, rq, timeout = "unary", req(payload=b"u" * rnd.randrange(1, 512), delay_ms=rnd.choice([0, 0, 5, 30])), 10
    elif r < 0.8:
        kind, rq, timeout = "unary_deadline", req(payload=b"d", delay_ms=rnd.choice([300, 600])), rnd.uniform(0.02,
                                                                                                         0.15)
    else:
        kind = "unary_cancel"
        t.start(kind)
        fut = stub.Unary.future(req(payload=b"c", delay_ms=400), timeout=10)
        time.sleep(rnd.uniform(0.0, 0.2))
        fut.cancel()
        t.end(kind, fut.code(), fut.details())  # code() waits for the end; the deadline bounds it
        return
    t.start(kind)
    try:
        reply, call = stub.Unary.with_call(rq, timeout=timeout)
        if reply.payload != rq.payload:
            t.bad("%s: payload %r != %r" % (kind, reply.payload[:20], rq.payload[:20]))
        t.end(kind, call.code())
    except grpc.RpcError as e:
        t.end(kind, e.code(), e.details())


def call_large(stub, rnd, t):
    """2-4 large replies at once on one connection."""
    sizes = [rnd.choice([64 << 10, 256 << 10, 1 << 20]) for _ in range(rnd.randrange(2, 5))]
    futs = []
    for size in sizes:
        t.start("unary_large")
        futs.append(stub.Unary.future(req(payload=b"L", response_size=size), timeout=10))
    for size, fut in zip(sizes, futs):
        code = fut.code()  # waits for the end; the deadline bounds it
        if code == OK and len(fut.result().payload) != size:
            t.bad("unary_large: %d bytes, wanted %d" % (len(fut.result().payload), size))
        t.end("unary_large", code, fut.details())


def call_stream(stub, rnd, t):
    n = rnd.randrange(100, 400)
    cancel_at = rnd.randrange(5, n) if rnd.random() < 0.3 else None
    kind = "stream_cancel" if cancel_at else "stream"
    t.start(kind)
    it = stub.ServerStream(req(payload=b"s", response_count=n, response_size=rnd.choice([1024, 8192])), timeout=20)
    seen = 0
    try:
        for m in it:
            if m.seq != seen:
                t.bad("stream: reply seq %d where %d was due" % (m.seq, seen))
            seen += 1
            if seen == cancel_at:
                it.cancel()
                break
            if seen % 5 == 0:
                time.sleep(0.04)  # a slow reader: flow control keeps the stream open for seconds
    except grpc.RpcError:
        pass
    code = it.code()
    if code == OK and seen != n:
        t.bad("stream: OK after %d of %d replies" % (seen, n))
    t.end(kind, code, it.details())


def call_bidi(stub, rnd, t):
    k = rnd.randrange(5, 25)
    gap = rnd.uniform(0.02, 0.06)
    cancel_at = rnd.randrange(1, k) if rnd.random() < 0.2 else None
    kind = "bidi_cancel" if cancel_at else "bidi"
    done = threading.Event()

    def requests():
        for i in range(k):
            if done.is_set():
                return
            yield req(payload=b"b%d" % i)
            time.sleep(gap)

    t.start(kind)
    it = stub.Bidi(requests(), timeout=15)
    seen = 0
    try:
        for m in it:
            if m.payload != b"b%d" % seen:
                t.bad("bidi: reply %r where b%d was due" % (m.payload, seen))
            seen += 1
            if seen == cancel_at:
                it.cancel()
                break
    except grpc.RpcError:
        pass
    done.set()
    code = it.code()
    if code == OK and seen != k:
        t.bad("bidi: OK after %d of %d replies" % (seen, k))
    t.end(kind, code, it.details())


class Chaos:
    """The backends' model (registered weight, SERVING, alive) and the events."""

    def __init__(self, etcd, slb, backends, rnd, etcd_url, admin_port):
        self.etcd, self.slb, self.rnd = etcd, slb, rnd
        self.backends = {b.id: b for b in backends}
        self.weight = {}  # id -> weight while registered in etcd
        self.unhealthy_until = {}  # id -> monotonic time of the flip back
        self.events = collections.Counter()
        self.etcd_url, self.admin_port = etcd_url, admin_port
        self.variant = 0
        self.reloads = 0

    def register(self, bid, weight):
        b = self.backends[bid]
        self.etcd.put(PREFIX + b.addr, json.dumps({"addr": b.addr, "weight": weight}))
        self.weight[bid] = weight

    def usable(self, without=()):
        return [i for i in self.weight if i not in self.unhealthy_until and i not in without]

    def step(self):
        now = time.monotonic()
        for bid, until in list(self.unhealthy_until.items()):
            if now >= until:
                self.backends[bid].set_health(True)
                del self.unhealthy_until[bid]
        ev = self.rnd.choices(["add", "remove", "weight", "health", "kill"], [3, 3, 3, 3, 1])[0]
        if ev == "add":
            free = [i for i in self.backends if i not in self.weight]
            if free:
                self.register(self.rnd.choice(free), self.rnd.randrange(1, 6))
                self.events["etcd_add"] += 1
        elif ev == "remove":
            cand = [i for i in self.weight if len(self.usable(without=(i,))) >= 2]
            if cand:
                bid = self.rnd.choice(cand)
                self.etcd.delete(PREFIX + self.backends[bid].addr)
                del self.weight[bid]
                self.events["etcd_remove"] += 1
        elif ev == "weight":
            if self.weight:
                self.register(self.rnd.choice(sorted(self.weight)), self.rnd.randrange(1, 10))
                self.events["etcd_weight"] += 1
        elif ev == "health":
            cand = [i for i in self.backends if i not in self.unhealthy_until and len(self.usable(without=(i,))) >= 2]
            if cand:
                bid = self.rnd.choice(cand)
                self.backends[bid].set_health(False)
                self.unhealthy_until[bid] = now + self.rnd.uniform(0.5, 2.5)
                self.events["health_flip"] += 1
        elif ev == "kill":
            self.kill_one()

    def kill_one(self):
        cand = [i for i, b in self.backends.items()
                if not i.startswith("py") and len(self.usable(without=(i,))) >= 2]
        if not cand:
            return
        bid = self.rnd.choice(cand)
        b = self.backends[bid]
        if self.rnd.random() < 0.7:
            b.kill9()
            self.events["backend_kill9"] += 1
        else:
            b.stop()  # SIGTERM: GOAWAY, then exit once its connections are gone
            self.events["backend_sigterm"] += 1
        time.sleep(self.rnd.uniform(0.1, 0.8))
        self.unhealthy_until.pop(bid, None)
        for attempt in range(3):
            try:
                b.restart()  # same port; it comes back SERVING
                self.events["backend_restart"] += 1
                return
            except RuntimeError:  # its port taken meanwhile by someone else: not sidelb's doing
                time.sleep(0.5)
        self.events["backend_lost"] += 1
        del self.backends[bid]
        if self.weight.pop(bid, None) is not None:
            self.etcd.delete(PREFIX + b.addr)

    def remove_busy(self):
        """Removes from etcd a backend that carries calls now (if one may go)."""
        try:
            clusters = json.loads(admin_get(self.admin_port, "/clusters"))
        except OSError:
            return
        busy = {b["address"] for c in clusters for b in c["backends"] if b["outstanding"] > 0}
        cand = [i for i in self.weight if self.backends[i].addr in busy and len(self.usable(without=(i,))) >= 2]
        if cand:
            bid = self.rnd.choice(cand)
            self.etcd.delete(PREFIX + self.backends[bid].addr)
            del self.weight[bid]
            self.events["etcd_remove_busy"] += 1

    def reload(self):
        if self.rnd.random() < 0.5:  # a removed backend still carrying calls when the server is replaced
            self.remove_busy()
            time.sleep(self.rnd.uniform(0.05, 0.3))
        self.variant += 1
        with open(self.slb.config_path, "w") as f:
            json.dump(with_test_workers(dict(config(self.etcd_url, self.slb.port, self.admin_port, self.variant),
                                             state_dir=self.slb.state_dir)), f)
        self.slb.signal(signal.SIGHUP)
        self.reloads += 1
        end = time.monotonic() + 10
        while self.slb.log().count("reloaded ") < self.reloads:
            if "reload:" in self.slb.log():
                raise AssertionError("reload %d failed:\n%s" % (self.reloads, self.slb.log()[-2000:]))
            if not self.slb.alive() or time.monotonic() > end:
                return False
            time.sleep(0.02)
        self.events["sighup"] += 1
        return True


@pytest.mark.skipif(SOAK_S <= 0, reason="SIDELB_SOAK_SECONDS=0")
@pytest.mark.timeout(int(SOAK_S) + 100)
def test_lifecycle_soak(c_backend, py_backend):
    seed = int(os.environ.get("SIDELB_SOAK_SEED") or random.randrange(1 << 31))
    print("soak: %.0f s, SIDELB_SOAK_SEED=%d" % (SOAK_S, seed))
    rnd = random.Random(seed)
    etcd = EtcdServer()
    stop_load = threading.Event()
    threads, channels = [], []
    try:
        backends = [c_backend("c%d" % i) for i in range(1, 6)] + [py_backend("py1")]
        port, admin_port = peers.free_port(), peers.free_port()
        slb = start_sidelb(config(etcd.url, port, admin_port, 0), extra_args=["--grace-ms", str(GRACE_MS)],
                           log_level="notice", timeout=20)
        chaos = Chaos(etcd, slb, backends, random.Random(rnd.random()), etcd.url, admin_port)
        for b in backends[:-2] + backends[-1:]:  # c5 starts unregistered
            chaos.register(b.id, rnd.randrange(1, 6))
        probe_channel = peers.channel(slb.addr)
        channels.append(probe_channel)
        probe = peers.echo_stub(probe_channel)
        EtcdServer.wait_for(lambda: ok_call(probe), 15, what="a first call through sidelb")

        tally = Tally()
        errors = []

        def worker(fn, seed):
            r = random.Random(seed)
            ch = peers.channel(slb.addr, **{"grpc.use_local_subchannel_pool": 1})  # a connection of its own
            channels.append(ch)
            stub = peers.echo_stub(ch)
            while not stop_load.is_set():
                try:
                    fn(stub, r, tally)
                except Exception:  # not a gRPC status: reported at the end; the thread goes on
                    errors.append(traceback.format_exc())
                    time.sleep(0.05)

        plan = [call_unary, call_unary, call_unary, call_large, call_stream, call_stream, call_stream, call_bidi]
        for fn in plan:
            th = threading.Thread(target=worker, args=(fn, rnd.random()), daemon=True)
            threads.append(th)
            th.start()

        t0 = time.monotonic()
        next_hup = t0 + rnd.uniform(2, 4)
        next_kill = t0 + rnd.uniform(3, 6)
        died = False
        while time.monotonic() - t0 < SOAK_S:
            if not slb.alive():
                died = True
                break
            now = time.monotonic()
            if now >= next_hup:
                if not chaos.reload():
                    died = not slb.alive()
                    if died:
                        break
                    raise AssertionError("SIGHUP %d not applied within 10 s" % chaos.reloads)
                next_hup = time.monotonic() + rnd.uniform(2, 4)
            elif now >= next_kill:
                chaos.kill_one()
                next_kill = time.monotonic() + rnd.uniform(4, 7)
            else:
                chaos.step()
            time.sleep(rnd.uniform(0.1, 0.4))
        soaked = time.monotonic() - t0

        stop_load.set()
        end = time.monotonic() + 30  # every call has a deadline of at most 20 s
        for th in threads:
            th.join(timeout=max(0.1, end - time.monotonic()))
        hung = sum(th.is_alive() for th in threads)
        for b in backends:
            b.set_health(True)

        problems = []
        log = slb.log()
        if died or not slb.alive():
            problems.append("sidelb died during the soak (exit %s):\n%s" % (slb.popen.poll(),
                                                                            sanitizer_excerpt(log) or log[-3000:]))
        print("soak: %.1f s, %d reloads, events %s" % (soaked, chaos.reloads, dict(chaos.events)))
        print("soak: calls started %s" % dict(tally.started))
        print("soak: statuses %s" % dict(sorted(tally.codes.items())))
        print("soak: allowed failures %s" % dict(tally.failures.most_common(12)))
        print("soak: unexpected %s" % dict(tally.unexpected.most_common(12)))
        if hung:
            problems.append("%d client threads still in a call 30 s after the load stopped" % hung)
        if tally.started != tally.ended:
            problems.append("calls started %s != ended with a status %s" % (dict(tally.started), dict(tally.ended)))
        if tally.unexpected and not died:  # once sidelb is gone every call fails: its death is the finding
            problems.append("calls ended with a status their kind does not allow ((kind, status, details): count; "
                            "UNAVAILABLE without 'sidelb:' = the app's connection dropped under a short call, "
                            "DEADLINE_EXCEEDED on a 10-20 s deadline = a call lost in sidelb): %s"
                            % dict(tally.unexpected.most_common(12)))
        if tally.broken:
            problems.append("wrong content: %s" % tally.broken)
        if errors:
            problems.append("%d non-gRPC exceptions in clients, first:\n%s" % (len(errors), errors[0]))

        if slb.alive():
            if not died:
                if soaked < SOAK_S or chaos.reloads < SOAK_S / 5 or tally.codes[("unary", "OK")] < 100 or \
                        tally.codes[("stream", "OK")] < 5:
                    problems.append("the soak did too little: %.1f s, %d reloads, %s" % (soaked, chaos.reloads,
                                                                                       dict(tally.codes)))
                for ev in ("etcd_add", "etcd_remove", "etcd_weight", "health_flip", "backend_restart"):
                    if chaos.events[ev] == 0:
                        problems.append("no %s event happened" % ev)
            # nothing held once the load is gone
            held = None
            end = time.monotonic() + 10
            while time.monotonic() < end:
                try:
                    held = held_calls(admin_port)
                except OSError as e:
                    held = ("admin: %s" % e,)
                if held == (0, [], 0):
                    break
                time.sleep(0.1)
            if held != (0, [], 0):
                problems.append("10 s after the load stopped sidelb still holds calls "
                                "(in flight, outstanding per backend, waiting): %r" % (held,))
            # still serving
            try:
                EtcdServer.wait_for(lambda: ok_call(probe), 10, what="a call through sidelb after the soak")
            except AssertionError as e:
                problems.append(str(e))
            for ch in channels:
                ch.close()
            # a clean, bounded exit
            slb.signal(signal.SIGTERM)
            t_term = time.monotonic()
            try:
                rc = slb.wait(timeout=GRACE_MS / 1000.0 + EXIT_MARGIN_S)
                print("soak: exit %s after SIGTERM in %.2f s" % (rc, time.monotonic() - t_term))
                if rc != 0:
                    problems.append("sidelb exited %s after SIGTERM:\n%s" % (rc, sanitizer_excerpt(slb.log()) or
                                                                             slb.log()[-2000:]))
            except subprocess.TimeoutExpired:
                problems.append("sidelb still running %.0f s after SIGTERM (--grace-ms %d); log tail:\n%s" % (
                    GRACE_MS / 1000.0 + EXIT_MARGIN_S, GRACE_MS, slb.log()[-1500:]))
        for b in backends:
            excerpt = sanitizer_excerpt(b.log())
            if excerpt:
                problems.append("backend %s sanitizer report:\n%s" % (b.id, excerpt))
        assert not problems, "\n\n".join(problems)
    finally:
        stop_load.set()
        for th in threads:
            th.join(timeout=5)
        for ch in channels:
            ch.close()
        etcd.destroy()


def ok_call(stub):
    try:
        return stub.Unary(req(payload=b"probe"), timeout=2).payload == b"probe"
    except grpc.RpcError:
        return False
