"""etcd discovery through the daemon: a real etcd-server, real backends,
sidelb following a prefix live (issue: etcd discovery)."""

import collections
import json
import socket
import threading
import time

import grpc
import pytest

import peers
from etcd_harness import EtcdServer, _free_port
from peers import req
from sidelb_harness import start_sidelb

PREFIX = "/grpclb/sidelb.test.Echo/"


def etcd_config(endpoints, port=None, policy="round_robin", prefix=PREFIX, **cluster_extra):
    port = port or peers.free_port()
    cluster = {"name": "echo", "discovery": {"etcd_prefix": prefix}, "policy": {policy: {}},
               "backoff": {"initial_ms": 100, "max_ms": 500}}
    cluster.update(cluster_extra)
    return {"etcd": {"endpoints": list(endpoints), "dial_timeout_ms": 500, "request_timeout_ms": 1000},
            "listeners": [{"address": "127.0.0.1:%d" % port,
                           "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
            "clusters": [cluster]}


def spread(stub, n=30):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def wait_spread(stub, pred, timeout, n=12):
    """Polls with rounds of n calls until pred(counter); returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        c = spread(stub, n)
        if pred(c):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, "distribution never matched: %r" % c


def register(etcd, be):
    etcd.put(PREFIX + be.addr, be.addr)  # the seeds' plain format


class Relay:
    """A TCP relay 127.0.0.1:port -> target that can be cut (connections
    closed, new ones refused) and restored: etcd "down" for sidelb while the
    test can still change it."""

    def __init__(self, target_port):
        self.target = target_port
        self.port = _free_port()
        self.up = True
        self.conns = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            if not self.up:
                c.close()
                continue
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=2)
                u.settimeout(None)  # the timeout was for connecting only: watches idle for long
            except OSError:
                c.close()
                continue
            with self.lock:
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.up = False
        with self.lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.conns = []

    def restore(self):
        self.up = True

    def close(self):
        self.stopped = True
        self.cut()
        self.sock.close()


@pytest.fixture
def etcd():
    e = EtcdServer()
    yield e
    e.destroy()


@pytest.mark.serial  # removal, re-add and catch-up each within 1-1.5 s
@pytest.mark.timeout(120)
def test_seeds_scenario(etcd):
    """3 registered -> even; one deleted -> its share moves within 1 s; back ->
    restored; etcd unreachable -> calls keep flowing; membership changed
    meanwhile; etcd back -> table correct within 1 s."""
    bes = [peers.start_c_backend("b%d" % i) for i in range(4)]
    relay = Relay(etcd.port)
    try:
        for b in bes[:3]:
            register(etcd, b)
        slb = start_sidelb(etcd_config([relay.url]))
        stub = peers.echo_stub(slb.addr)
        wait_spread(stub, lambda c: c == {"b0": 4, "b1": 4, "b2": 4}, 5)
        assert spread(stub, 30) == {"b0": 10, "b1": 10, "b2": 10}

        etcd.delete(PREFIX + bes[1].addr)
        took = wait_spread(stub, lambda c: "b1" not in c, 5)
        assert took < 1.0, "removal took %.2f s" % took
        assert spread(stub, 30) == {"b0": 15, "b2": 15}

        register(etcd, bes[1])
        took = wait_spread(stub, lambda c: c.get("b1") == 4, 5)
        assert took < 1.0, "re-add took %.2f s" % took

        # etcd unreachable for sidelb: calls keep flowing from the last table
        relay.cut()
        time.sleep(0.5)
        assert spread(stub, 30) == {"b0": 10, "b1": 10, "b2": 10}
        # membership changes meanwhile: b0 leaves, b3 joins
        etcd.delete(PREFIX + bes[0].addr)
        register(etcd, bes[3])
        time.sleep(1.5)
        assert spread(stub, 30) == {"b0": 10, "b1": 10, "b2": 10}, "table must not change while etcd is away"
        relay.restore()
        t0 = time.monotonic()
        wait_spread(stub, lambda c: c == {"b1": 4, "b2": 4, "b3": 4}, 5)
        took = time.monotonic() - t0
        assert took < 1.5, "catch-up took %.2f s" % took  # within 1 s of etcd coming back, plus one probe round
        log = slb.log()
        assert 1 <= log.count("etcd unreachable") <= 2, "log once per state change:\n" + log
    finally:
        relay.close()


@pytest.mark.serial  # catch-up within 1.5 s
@pytest.mark.timeout(60)
def test_etcd_stopped_and_restarted(etcd):
    bes = [peers.start_c_backend("s%d" % i) for i in range(3)]
    for b in bes[:2]:
        register(etcd, b)
    slb = start_sidelb(etcd_config([etcd.url]))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"s0": 6, "s1": 6}, 5)
    etcd.stop()
    time.sleep(1.0)
    assert spread(stub, 20) == {"s0": 10, "s1": 10}
    etcd.start()
    register(etcd, bes[2])
    took = wait_spread(stub, lambda c: c.get("s2") == 4, 5)
    assert took < 1.5
    assert slb.alive()


@pytest.mark.timeout(60)
def test_watch_resumes_after_compaction(etcd):
    """sidelb is away while keys churn and etcd compacts past its revision:
    on return it re-lists and has the right table."""
    bes = [peers.start_c_backend("c%d" % i) for i in range(3)]
    relay = Relay(etcd.port)
    try:
        register(etcd, bes[0])
        slb = start_sidelb(etcd_config([relay.url]))
        stub = peers.echo_stub(slb.addr)
        wait_spread(stub, lambda c: c == {"c0": 12}, 5)
        relay.cut()
        for i in range(20):
            etcd.put("/other/churn", str(i))
        register(etcd, bes[1])
        register(etcd, bes[2])
        etcd.delete(PREFIX + bes[0].addr)
        rev = int(etcd._post("/v3/kv/range", {"key": "eA=="})["header"]["revision"])
        etcd._post("/v3/kv/compaction", {"revision": str(rev), "physical": True})
        relay.restore()
        wait_spread(stub, lambda c: c == {"c1": 6, "c2": 6}, 5)
    finally:
        relay.close()


@pytest.mark.timeout(60)
def test_malformed_values_are_skipped_with_a_warning(etcd):
    good = [peers.start_c_backend("g%d" % i) for i in range(2)]
    for b in good:
        register(etcd, b)
    etcd.put(PREFIX + "garbage", "this is not an address")
    etcd.put(PREFIX + "badjson", '{"addr": 12}')
    etcd.put(PREFIX + "badport", "127.0.0.1:99999")
    slb = start_sidelb(etcd_config([etcd.url]))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"g0": 6, "g1": 6}, 5)
    # a bad write over a good key does not take the backend away
    etcd.put(PREFIX + good[0].addr, "%%%")
    time.sleep(0.5)
    assert spread(stub, 20) == {"g0": 10, "g1": 10}
    log = slb.log()
    for key in ("garbage", "badjson", "badport"):
        assert PREFIX + key in log, "warning must name the key %s:\n%s" % (key, log)
    assert slb.alive()


@pytest.mark.timeout(60)
def test_value_formats_and_weights(etcd):
    a = peers.start_c_backend("json3")
    b = peers.start_c_backend("naming1")
    etcd.put(PREFIX + "a", json.dumps({"addr": a.addr, "weight": 3, "zone": "z1", "metadata": {"v": 1}}))
    etcd.put(PREFIX + b.addr, json.dumps({"Op": 0, "Addr": b.addr, "Metadata": {"w": 1}}))
    slb = start_sidelb(etcd_config([etcd.url], policy="weighted_round_robin"))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"json3": 6, "naming1": 2}, 5, n=8)
    assert spread(stub, 40) == {"json3": 30, "naming1": 10}
    # weight change applies live
    etcd.put(PREFIX + "a", json.dumps({"addr": a.addr, "weight": 1}))
    wait_spread(stub, lambda c: c == {"json3": 4, "naming1": 4}, 5, n=8)
    # etcd naming delete (Op 1) removes
    etcd.put(PREFIX + b.addr, json.dumps({"Op": 1, "Addr": b.addr}))
    wait_spread(stub, lambda c: c == {"json3": 8}, 5, n=8)


@pytest.mark.timeout(60)
def test_removed_backend_drains_in_flight_calls(etcd):
    bes = [peers.start_c_backend("d%d" % i) for i in range(2)]
    for b in bes:
        register(etcd, b)
    slb = start_sidelb(etcd_config([etcd.url]))
    stub = peers.echo_stub(slb.addr)
    wait_spread(stub, lambda c: c == {"d0": 6, "d1": 6}, 5)
    futs = [stub.Unary.future(req(payload=b"slow", delay_ms=800), timeout=10) for _ in range(6)]
    time.sleep(0.2)
    etcd.delete(PREFIX + bes[0].addr)
    # in-flight calls on the removed backend finish normally
    assert [f.result().payload for f in futs] == [b"slow"] * 6
    assert spread(stub, 10) == {"d1": 10}


class HangServer:
    """Accepts connections and never answers (an etcd endpoint that hangs)."""

    def __init__(self, garbage=False):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.garbage = garbage
        self.conns = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            if self.garbage:
                try:
                    c.recv(65536)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nnot json!!!\n")
                except OSError:
                    pass

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("garbage", [False, True])
def test_bad_endpoint_fails_over_to_a_good_one(etcd, garbage):
    bad = HangServer(garbage)
    try:
        b = peers.start_c_backend("fo")
        register(etcd, b)
        slb = start_sidelb(etcd_config(["http://127.0.0.1:%d" % bad.port, etcd.url]))
        stub = peers.echo_stub(slb.addr)
        wait_spread(stub, lambda c: c == {"fo": 12}, 10)
        assert slb.alive()
    finally:
        bad.close()


@pytest.mark.timeout(60)
def test_only_bad_endpoints_no_crash_and_clear_error():
    bad = HangServer(garbage=True)
    try:
        cfg = etcd_config(["http://127.0.0.1:%d" % bad.port], wait_for_ready_ms=0)
        slb = start_sidelb(cfg)
        stub = peers.echo_stub(slb.addr)
        with pytest.raises(grpc.RpcError) as e:
            stub.Unary(req(payload=b"x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        time.sleep(1.0)
        assert slb.alive()
        assert "etcd" in slb.log()
    finally:
        bad.close()


def _try_put(member, key, value):
    try:
        member.put(key, value)
        return True
    except OSError:
        return False


class EtcdCluster:
    """Three etcd members on loopback."""

    def __init__(self):
        import shutil
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="sidelb-etcd3-")
        self.client = [_free_port() for _ in range(3)]
        self.peer = [_free_port() for _ in range(3)]
        initial = ",".join("m%d=http://127.0.0.1:%d" % (i, self.peer[i]) for i in range(3))
        self.procs = []
        for i in range(3):
            url = "http://127.0.0.1:%d" % self.client[i]
            purl = "http://127.0.0.1:%d" % self.peer[i]
            argv = ["/usr/bin/etcd", "--name", "m%d" % i, "--data-dir", "%s/m%d" % (self.dir, i),
                    "--listen-client-urls", url, "--advertise-client-urls", url,
                    "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                    "--initial-cluster", initial, "--initial-cluster-token", "sidelb-3",
                    "--initial-cluster-state", "new"]
            self.procs.append(peers.Proc(argv, name="etcd-m%d" % i, ready=None, port=self.client[i], timeout=20))
        self.members = [EtcdServer.__new__(EtcdServer) for _ in range(3)]
        for i, m in enumerate(self.members):
            m.url = "http://127.0.0.1:%d" % self.client[i]
            m.port = self.client[i]
        EtcdServer.wait_for(lambda: self._healthy(), 20, what="etcd cluster healthy")
        self._shutil = shutil

    def _healthy(self):
        try:
            self.members[0].put("/health", "ok")
            return True
        except Exception:
            return False

    def destroy(self):
        for p in self.procs:
            p.stop()
        self._shutil.rmtree(self.dir, True)


@pytest.mark.timeout(90)
def test_three_member_cluster_failover():
    cl = EtcdCluster()
    try:
        bes = [peers.start_c_backend("f%d" % i) for i in range(3)]
        cl.members[1].put(PREFIX + bes[0].addr, bes[0].addr)
        # sidelb uses member 0 first
        slb = start_sidelb(etcd_config([m.url for m in cl.members]))
        stub = peers.echo_stub(slb.addr)
        wait_spread(stub, lambda c: c == {"f0": 12}, 10)
        cl.procs[0].kill9()
        # the survivors may need a leader election before they take writes
        EtcdServer.wait_for(lambda: _try_put(cl.members[1], PREFIX + bes[1].addr, bes[1].addr), 15,
                            what="a write after the member was killed")
        took = wait_spread(stub, lambda c: c == {"f0": 6, "f1": 6}, 10)
        cl.members[2].put(PREFIX + bes[2].addr, bes[2].addr)
        wait_spread(stub, lambda c: c == {"f0": 4, "f1": 4, "f2": 4}, 5)
        assert slb.alive()
    finally:
        cl.destroy()
