"""Slow start end to end, with a real etcd-server, real sidelbs and the C test
backend: a backend ramps from the registration time its etcd value carries
("registered_at_ms"), not from when a sidelb first sees it, so a sidelb that
starts gives a backend registered long ago its full share at once and a
freshly registered one a small share; round_robin and random, which ignore
weights, give a new backend a small share while it ramps.

Shares are measured over a few hundred calls taken right away and compared
with wide bounds (the expected share of a ramping backend is ~10 % of a full
one); the windows are long enough (10 s) that a loaded machine still takes
the first calls well inside them."""

import collections
import json
import time

import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import simple_config, start_sidelb

pytestmark = pytest.mark.serial  # ramp shares read against the clock (conftest.py)

WINDOW_MS = 10000


def discovering_config(etcd, prefix, policy="round_robin"):
    cfg = simple_config([], policy=policy, policy_options={"slow_start": {"window_ms": WINDOW_MS}})
    cfg["clusters"][0]["discovery"] = {"etcd_prefix": prefix}
    cfg["etcd"] = {"endpoints": [etcd.url]}
    return cfg


def registering_config(etcd, prefix, backends):
    cfg = simple_config([b.addr for b in backends])
    cfg["etcd"] = {"endpoints": [etcd.url]}
    cfg["register"] = [{"prefix": prefix, "address": b.addr, "ttl_s": 5, "format": "json"} for b in backends]
    return cfg


def spread(stub, n):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def wall_ms():
    return int(time.time() * 1000)


def value(b, registered_at_ms=None):
    v = {"addr": b.addr}
    if registered_at_ms is not None:
        v["registered_at_ms"] = registered_at_ms
    return json.dumps(v)


def wait_serving(stub, ids, timeout=10):
    EtcdServer.wait_for(lambda: set(spread(stub, 40)) >= set(ids), timeout, what="calls reach %s" % sorted(ids))


@pytest.mark.timeout(60)
def test_registration_time_decides_the_ramp():
    """old: registered an hour ago -> full share as soon as sidelb starts;
    fresh: registered now -> ~10 % of a full share, growing to an even share."""
    etcd = EtcdServer()
    old, fresh = peers.start_c_backend("old"), peers.start_c_backend("fresh")
    prefix = "/slowstart/at/"
    etcd.put(prefix + "old", value(old, wall_ms() - 3600 * 1000))
    etcd.put(prefix + "fresh", value(fresh, wall_ms()))

    slb = start_sidelb(discovering_config(etcd, prefix))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    first = spread(stub, 300)
    took = time.monotonic() - t0
    # fresh at <= ~30 % of its weight while these ran: <= 0.3 / 1.3 = 23 % of the calls; without the
    # registration time both ramp together from sidelb's start and split 50/50
    assert took < WINDOW_MS / 1000 / 2, "300 calls took %.1fs" % took
    assert 0 < first["fresh"] < 0.3 * 300, first
    assert first["old"] > 0.7 * 300, first

    # the ramp ends: an even share
    EtcdServer.wait_for(lambda: spread(stub, 200)["fresh"] >= 0.4 * 200, WINDOW_MS / 1000 + 15,
                        interval=0.5, what="fresh at an even share after its ramp")


@pytest.mark.timeout(90)
def test_restarted_sidelb_does_not_ramp_long_registered_backends():
    """sidelb's registrar writes the registration time: a discovering sidelb
    restarted after two backends have been registered longer than the window
    gives them full shares at once, and a third registered a moment ago
    (by another registering sidelb) a small one, in step with its ramp on the
    sidelb that saw it first."""
    etcd = EtcdServer()
    b1, b2, b3 = (peers.start_c_backend(i) for i in ("b1", "b2", "b3"))
    prefix = "/slowstart/restart/"
    start_sidelb(registering_config(etcd, prefix, [b1, b2]))
    etcd.wait_for(lambda: len(etcd.range_prefix(prefix)) == 2, 5, what="b1, b2 registered")
    at = {k: json.loads(v)["registered_at_ms"] for k, v in etcd.range_prefix(prefix).items()}
    assert all(abs(t - wall_ms()) < 10000 for t in at.values()), at

    d1 = start_sidelb(discovering_config(etcd, prefix))
    stub1 = peers.echo_stub(d1.addr)
    wait_serving(stub1, {"b1", "b2"})
    time.sleep(WINDOW_MS / 1000 + 0.5)  # b1 and b2 have been registered for longer than the window

    start_sidelb(registering_config(etcd, prefix, [b3]))
    etcd.wait_for(lambda: len(etcd.range_prefix(prefix)) == 3, 5, what="b3 registered")
    EtcdServer.wait_for(lambda: spread(stub1, 40)["b3"] > 0, 10, what="d1 sends b3 calls")
    seen_by_d1 = spread(stub1, 300)

    # the discovering sidelb restarts
    d1.stop()
    d2 = start_sidelb(discovering_config(etcd, prefix))
    stub2 = peers.echo_stub(d2.addr)
    wait_serving(stub2, {"b1", "b2"})
    restarted = spread(stub2, 300)
    # b3 ramps from its registration: at most f / (2 + f) of the calls, f its factor when the last call
    # went (it only grew during them); b1 and b2 do not ramp again. Before, all three ramped together from
    # d2's start: a third each.
    b3_at = json.loads(etcd.get(prefix + b3.addr))["registered_at_ms"]
    f = max(0.1, (wall_ms() - b3_at) / WINDOW_MS)
    assert f < 0.8, "%.1f s from b3's registration to here: no ramp left to see" % (f * WINDOW_MS / 1000)
    assert 0 < restarted["b3"] < (f / (2 + f) + 0.05) * 300, (restarted, f, seen_by_d1)
    assert restarted["b1"] > 0.35 * 300 and restarted["b2"] > 0.35 * 300, restarted
    assert seen_by_d1["b3"] < 0.25 * 300, seen_by_d1  # the same ramp on the sidelb that saw it first


@pytest.mark.parametrize("policy", ["round_robin", "random"])
@pytest.mark.timeout(60)
def test_new_backend_gets_a_small_share_at_first(policy):
    """round_robin and random ignore weights, but while a backend ramps they
    pick by ramp weight: a new backend among two long-registered ones gets
    ~0.1 / 2.1 of the calls at first, not a third."""
    etcd = EtcdServer()
    b1, b2, new = (peers.start_c_backend(i) for i in ("b1", "b2", "new"))
    prefix = "/slowstart/new/%s/" % policy
    long_ago = wall_ms() - 3600 * 1000
    etcd.put(prefix + "b1", value(b1, long_ago))
    etcd.put(prefix + "b2", value(b2, long_ago))
    slb = start_sidelb(discovering_config(etcd, prefix, policy))
    stub = peers.echo_stub(slb.addr)
    wait_serving(stub, {"b1", "b2"})
    before = spread(stub, 200)
    assert before["b1"] > 60 and before["b2"] > 60, before  # no ramp: even at once

    etcd.put(prefix + "new", value(new))  # no registration time: ramps from when sidelb adds it
    EtcdServer.wait_for(lambda: "backend %s added" % new.addr in slb.log(), 5, what="sidelb adds the new backend")
    first = spread(stub, 300)
    assert 0 < first["new"] < 0.2 * 300, first
    assert first["b1"] > 0.35 * 300 and first["b2"] > 0.35 * 300, first
