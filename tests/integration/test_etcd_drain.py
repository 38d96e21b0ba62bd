"""One etcd write drains a backend on every host: "drain": true in the
backend's etcd value (lib/etcd_value.c, lib/cluster.c), with a real
etcd-server, and sidelb's own registration (lib/register.c) keeping an
operator's drain flag when it re-puts its key."""

import collections
import concurrent.futures
import json
import signal
import time
import urllib.request

import pytest

import peers
from etcd_harness import EtcdServer
from peers import req, wait_for
from sidelb_harness import simple_config, start_sidelb, start_with_admin_listener


def without_time(value):
    """The registrar's value less its registration time (slow start), which the test cannot know."""
    value.pop("registered_at_ms", None)
    return value


def discovering(etcd, prefix):
    cfg = simple_config([])
    cfg["clusters"][0]["discovery"] = {"etcd_prefix": prefix}
    cfg["etcd"] = {"endpoints": [etcd.url]}
    return start_with_admin_listener(cfg)


def backends(slb):
    with urllib.request.urlopen("http://127.0.0.1:%d/clusters" % slb.admin_port, timeout=5) as r:
        return {b["address"]: b for b in json.loads(r.read())[0]["backends"]}


def admin_post(slb, path):
    rq = urllib.request.Request("http://127.0.0.1:%d%s" % (slb.admin_port, path), data=b"", method="POST")
    with urllib.request.urlopen(rq, timeout=5) as r:
        return r.status, r.read()


def spread(stub, n):
    return collections.Counter(stub.Unary(req(), timeout=5).backend_id for _ in range(n))


@pytest.mark.timeout(60)
def test_etcd_drain_flag_stops_new_calls_lets_calls_in_flight_finish():
    etcd = EtcdServer()
    b0, b1 = peers.start_c_backend("d0"), peers.start_c_backend("d1")
    prefix = "/drain-test/"
    etcd.put(prefix + "b0", json.dumps({"addr": b0.addr}))
    etcd.put(prefix + "b1", json.dumps({"addr": b1.addr}))
    slbs = [discovering(etcd, prefix) for _ in range(2)]  # two hosts
    stubs = [peers.echo_stub(s.addr) for s in slbs]
    for s, stub in zip(slbs, stubs):
        wait_for(lambda: len(backends(s)) == 2, 10)
        assert set(spread(stub, 4)) == {"d0", "d1"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        slow = pool.submit(stubs[0].Unary, req(delay_ms=1500), timeout=20)
        try:
            wait_for(lambda: backends(slbs[0])[b0.addr]["outstanding"] == 1, 2)
        except AssertionError:
            slow.result()  # round robin put it on d1: put the next one on d0
            slow = pool.submit(stubs[0].Unary, req(delay_ms=1500), timeout=20)
            wait_for(lambda: backends(slbs[0])[b0.addr]["outstanding"] == 1, 10)
        # the one write: every sidelb stops new calls to d0
        etcd.put(prefix + "b0", json.dumps({"addr": b0.addr, "drain": True}))
        for s in slbs:
            wait_for(lambda: backends(s)[b0.addr]["drained"]["etcd"], 10)
        for stub in stubs:
            assert spread(stub, 8) == {"d1": 8}
        assert slow.result().backend_id == "d0"  # its call in flight finished
    assert etcd.get(prefix + "b0") is not None  # the key stays
    for s in slbs:
        assert backends(s)[b0.addr]["healthy"] is False
    # admin drain and etcd drain are apart: undraining in etcd leaves an admin drain in place
    assert admin_post(slbs[1], "/clusters/echo/backends/%s/drain" % b0.addr)[0] == 200
    etcd.put(prefix + "b0", json.dumps({"addr": b0.addr, "weight": 2}))
    wait_for(lambda: backends(slbs[0])[b0.addr]["weight"] == 2, 10)
    wait_for(lambda: backends(slbs[1])[b0.addr]["weight"] == 2, 10)
    assert "d0" in spread(stubs[0], 6)
    assert backends(slbs[1])[b0.addr]["drained"] == {"admin": True, "etcd": False}
    assert spread(stubs[1], 6) == {"d1": 6}
    assert admin_post(slbs[1], "/clusters/echo/backends/%s/undrain" % b0.addr)[0] == 200
    assert "d0" in spread(stubs[1], 6)


@pytest.mark.timeout(60)
def test_registration_keeps_an_operators_drain_flag():
    etcd = EtcdServer()
    b = peers.start_c_backend("r0")
    prefix = "/grpclb/drain-reg/"
    key = prefix + b.addr
    cfg = simple_config([b.addr])
    cfg["etcd"] = {"endpoints": [etcd.url]}
    cfg["register"] = [{"prefix": prefix, "address": b.addr, "ttl_s": 3}]  # plain format, key checked every 1 s
    reg = start_sidelb(cfg)
    etcd.wait_for(lambda: etcd.get(key) == b.addr, 10, what="key registered")
    lease = etcd.get_kv(key)["lease"]
    assert lease != 0
    client = discovering(etcd, prefix)
    stub = peers.echo_stub(client.addr)
    wait_for(lambda: len(backends(client)) == 1, 10)
    assert stub.Unary(req(), timeout=5).backend_id == "r0"

    # an operator drains it as etcdctl put would: a new value, no lease
    etcd.put(key, json.dumps({"addr": b.addr, "drain": True}))
    wait_for(lambda: backends(client)[b.addr]["drained"]["etcd"], 10)
    # the registrar puts the key back under its lease, keeping "drain": true
    etcd.wait_for(lambda: etcd.get_kv(key)["lease"] == lease, 10, what="key back under the registration's lease")
    assert without_time(json.loads(etcd.get(key))) == {"addr": b.addr, "drain": True}
    assert "drained by an operator" in reg.log()
    time.sleep(2.5)  # two more key checks: nothing overwrites the flag
    assert without_time(json.loads(etcd.get(key))) == {"addr": b.addr, "drain": True}
    assert backends(client)[b.addr]["drained"]["etcd"] is True

    # undrain: the operator puts a value without the flag; the registrar restores its own format
    etcd.put(key, json.dumps({"addr": b.addr}))
    etcd.wait_for(lambda: etcd.get(key) == b.addr and etcd.get_kv(key)["lease"] == lease, 10,
                  what="key restored undrained")
    wait_for(lambda: not backends(client)[b.addr]["drained"]["etcd"], 10)
    assert stub.Unary(req(), timeout=5).backend_id == "r0"


@pytest.mark.timeout(60)
def test_admin_drain_of_an_etcd_backend_survives_a_reload():
    etcd = EtcdServer()
    b0, b1 = peers.start_c_backend("h0"), peers.start_c_backend("h1")
    prefix = "/drain-reload/"
    etcd.put(prefix + "b0", b0.addr)
    etcd.put(prefix + "b1", b1.addr)
    slb = discovering(etcd, prefix)
    stub = peers.echo_stub(slb.addr)
    wait_for(lambda: len(backends(slb)) == 2, 10)
    assert admin_post(slb, "/clusters/echo/backends/%s/drain" % b0.addr)[0] == 200
    slb.signal(signal.SIGHUP)
    wait_for(lambda: "reloaded" in slb.log() or "reload:" in slb.log(), 10, what="the reload")
    assert "reload:" not in slb.log(), slb.log()
    # the new server's first etcd listing brings b0 back drained
    wait_for(lambda: len(backends(slb)) == 2 and backends(slb)[b0.addr]["drained"]["admin"], 10,
             what="b0 drained after the reload")
    wait_for(lambda: spread(stub, 8) == {"h1": 8}, 10, what="calls only to h1")
    # a backend that leaves and comes back later is not drained any more (the drain ended with it)
    etcd.delete(prefix + "b0")
    wait_for(lambda: b0.addr not in backends(slb), 10)
    etcd.put(prefix + "b0", b0.addr)
    wait_for(lambda: b0.addr in backends(slb), 10)
    assert backends(slb)[b0.addr]["drained"]["admin"] is False
