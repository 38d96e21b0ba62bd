"""Persisted tables (state_dir): an etcd-fed cluster restarted or reloaded
while etcd is down serves its last known table, marked stale until etcd
answers (issue 10, item 6). Real etcd-server, C test backends, a TCP relay
that makes etcd unreachable for sidelb while the test still changes it."""

import collections
import json
import os
import re
import signal
import tempfile
import threading
import time
import urllib.request

import grpc
import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import start_sidelb, with_test_workers
from test_discovery import Relay

PREFIX = "/grpclb/sidelb.test.Echo/"
PERSISTED = "cluster echo: table persisted"


def config(etcd_url, state_dir=None, port=None):
    cfg = {"etcd": {"endpoints": [etcd_url], "dial_timeout_ms": 500, "request_timeout_ms": 1000},
           "listeners": [{"address": "127.0.0.1:%d" % (port or peers.free_port()),
                          "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}],
           "clusters": [{"name": "echo", "discovery": {"etcd_prefix": PREFIX}, "policy": {"round_robin": {}},
                         "backoff": {"initial_ms": 100, "max_ms": 500}}],
           "admin": {"address": "127.0.0.1:%d" % peers.free_port()}}
    if state_dir is not None:
        cfg["state_dir"] = state_dir
    return cfg


def admin_get(cfg, path):
    url = "http://%s%s" % (cfg["admin"]["address"], path)
    return urllib.request.urlopen(url, timeout=5).read().decode()


def cluster_info(cfg):
    return json.loads(admin_get(cfg, "/clusters"))[0]


def stale_metric(cfg):
    m = re.search(r'^sidelb_cluster_table_stale\{cluster="echo"\} (\d+)$', admin_get(cfg, "/metrics"), re.M)
    return int(m.group(1)) if m else None


def spread(stub, n=20):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def state_file(state_dir):
    path = os.path.join(state_dir, "cluster-echo.json")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def file_addrs(state_dir):
    doc = state_file(state_dir)
    return sorted(e["value"]["addr"] for e in doc["endpoints"]) if doc else None


@pytest.fixture
def etcd():
    e = EtcdServer()
    yield e
    e.destroy()


@pytest.mark.timeout(120)
def test_restart_while_etcd_is_down_uses_the_persisted_table(etcd):
    bes = [peers.start_c_backend("p%d" % i) for i in range(3)]
    etcd.put(PREFIX + "k0", json.dumps({"addr": bes[0].addr, "weight": 3, "zone": "z1"}))
    etcd.put(PREFIX + "k1", bes[1].addr)
    relay = Relay(etcd.port)
    try:
        slb = start_sidelb(config(relay.url))
        state_dir = slb.state_dir
        stub = peers.echo_stub(slb.addr)
        EtcdServer.wait_for(lambda: set(spread(stub, 8)) == {"p0", "p1"}, 10, what="both backends from etcd")
        EtcdServer.wait_for(lambda: file_addrs(state_dir) == sorted([bes[0].addr, bes[1].addr]), 10,
                            what="the state file")
        doc = state_file(state_dir)
        assert doc["prefix"] == PREFIX and doc["cluster"] == "echo" and doc["revision"] > 0
        assert abs(doc["written_unix_ms"] / 1000 - time.time()) < 60
        assert {"key": PREFIX + "k0", "value": {"addr": bes[0].addr, "weight": 3, "zone": "z1"}} in doc["endpoints"]
        written = state_file(state_dir)["written_unix_ms"]
        time.sleep(0.1)
        slb.stop()  # written once more at the stop: its time says the table was current until then
        assert state_file(state_dir)["written_unix_ms"] > written
        etcd.stop()

        # restart with etcd down: the table of the file, stale
        cfg = config(relay.url, state_dir=state_dir)
        slb = start_sidelb(cfg)
        stub = peers.echo_stub(slb.addr)
        got = spread(stub, 20)  # the very first calls succeed
        assert set(got) == {"p0", "p1"}, got
        info = cluster_info(cfg)
        assert info["stale"] is True and info["table_source"] == "state_file", info
        assert info["table_age_ms"] >= 0
        assert {b["address"]: b["weight"] for b in info["backends"]} == {bes[0].addr: 3, bes[1].addr: 1}
        assert [b["zone"] for b in info["backends"] if b["address"] == bes[0].addr] == ["z1"]
        assert stale_metric(cfg) == 1
        assert "2 endpoints from the state file" in slb.log()

        # etcd back with a changed table (changed while sidelb could not see it)
        relay.cut()
        etcd.start()
        etcd.delete(PREFIX + "k1")
        etcd.put(PREFIX + "k2", bes[2].addr)
        time.sleep(0.5)
        assert cluster_info(cfg)["stale"] is True  # still unreachable for sidelb
        relay.restore()
        EtcdServer.wait_for(lambda: cluster_info(cfg)["stale"] is False, 15, what="stale to clear")
        info = cluster_info(cfg)
        assert "table_source" not in info
        assert sorted(b["address"] for b in info["backends"]) == sorted([bes[0].addr, bes[2].addr])
        assert stale_metric(cfg) == 0
        EtcdServer.wait_for(lambda: set(spread(stub, 8)) == {"p0", "p2"}, 10, what="the new table in use")
        EtcdServer.wait_for(lambda: file_addrs(state_dir) == sorted([bes[0].addr, bes[2].addr]), 10,
                            what="the state file to follow etcd")
        assert "replaces the stale one from the state file" in slb.log()
    finally:
        relay.close()


@pytest.mark.timeout(120)
def test_reload_while_etcd_is_down_keeps_calls_flowing(etcd):
    """No state file (state_dir ""): only the hand-over can keep the table.
    Any failed call (UNAVAILABLE, DEADLINE_EXCEEDED) fails the test."""
    bes = [peers.start_c_backend("r%d" % i) for i in range(2)]
    for i, b in enumerate(bes):
        etcd.put(PREFIX + "k%d" % i, b.addr)
    relay = Relay(etcd.port)
    try:
        cfg = config(relay.url, state_dir="")
        slb = start_sidelb(cfg)
        stub = peers.echo_stub(slb.addr)
        EtcdServer.wait_for(lambda: set(spread(stub, 8)) == {"r0", "r1"}, 10, what="both backends from etcd")
        relay.cut()
        EtcdServer.wait_for(lambda: "etcd unreachable" in slb.log(), 10, what="etcd to be unreachable")

        ok, errors, lat = collections.Counter(), [], []
        stop = threading.Event()

        def app():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    ok[stub.Unary(req(payload=b"x"), timeout=1.5).backend_id] += 1
                    lat.append(time.monotonic() - t)
                except grpc.RpcError as e:
                    errors.append((e.code(), e.details()))
                except Exception as e:  # noqa: BLE001 - a dead app thread must fail the test, not stall it
                    errors.append(("exception", repr(e)))
                time.sleep(0.005)

        th = threading.Thread(target=app)
        th.start()
        try:
            time.sleep(0.5)
            for n in (1, 2):  # twice: the second hand-over passes on a table that is itself handed over
                cfg["admin"]["address"] = "127.0.0.1:%d" % peers.free_port()
                with open(slb.config_path, "w") as f:
                    json.dump(with_test_workers(cfg), f)
                before = sum(ok.values())
                slb.signal(signal.SIGHUP)
                EtcdServer.wait_for(lambda: slb.log().count("reloaded") >= n, 10, what="reload %d" % n)
                try:
                    EtcdServer.wait_for(lambda: sum(ok.values()) > before + 50, 20, what="calls after reload")
                except AssertionError:
                    raise AssertionError("calls after reload %d: %r, errors %r" % (n, ok, errors[:3]))
                info = cluster_info(cfg)
                assert info["stale"] is True and info["table_source"] == "reload", info
                assert sorted(b["address"] for b in info["backends"]) == sorted(b.addr for b in bes)
                assert stale_metric(cfg) == 1
        finally:
            stop.set()
            th.join(10)
        assert errors == [], errors[:5]
        assert set(ok) == {"r0", "r1"}, ok
        print("2 reloads during an etcd outage: %d calls, 0 failed, max latency %.1f ms"
              % (sum(ok.values()), 1000 * max(lat)))
        assert slb.log().count("2 endpoints taken from the previous server") == 2
        assert "cluster echo: no state file" not in slb.log()

        # etcd back: the new server's own watch takes over
        relay.restore()
        EtcdServer.wait_for(lambda: cluster_info(cfg)["stale"] is False, 15, what="stale to clear")
        assert set(spread(stub, 8)) == {"r0", "r1"}
    finally:
        relay.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content", ["truncated", "garbage", "bad_address", "other_prefix"])
def test_corrupt_state_file_is_ignored(etcd, content):
    be = peers.start_c_backend("c0")
    state_dir = tempfile.mkdtemp(prefix="sidelb-state-")
    good = {"format": 1, "cluster": "echo", "prefix": PREFIX, "revision": 9, "written_unix_ms": 1,
            "endpoints": [{"key": PREFIX + "k0", "value": {"addr": be.addr}}]}
    text = {"truncated": json.dumps(good)[:-20],
            "garbage": "\x00\x01not json at all",
            "bad_address": json.dumps(dict(good, endpoints=[{"key": PREFIX + "k0", "value": {"addr": "nope"}}])),
            "other_prefix": json.dumps(dict(good, prefix="/grpclb/", endpoints=[]))}  # the cluster's prefix changed
    with open(os.path.join(state_dir, "cluster-echo.json"), "w") as f:
        f.write(text[content])
    relay = Relay(etcd.port)
    relay.cut()
    try:
        cfg = config(relay.url, state_dir=state_dir)
        slb = start_sidelb(cfg)
        lines = [ln for ln in slb.log().splitlines() if "state file ignored" in ln]
        assert len(lines) == 1, slb.log()
        assert "cluster-echo.json" in lines[0] and "empty until etcd answers" in lines[0], lines[0]
        info = cluster_info(cfg)
        assert info["backends"] == [] and info["stale"] is False
        etcd.put(PREFIX + "k0", be.addr)
        relay.restore()
        stub = peers.echo_stub(slb.addr)
        EtcdServer.wait_for(lambda: set(spread(stub, 4)) == {"c0"}, 15, what="the backend from etcd")
        # the file is replaced by a good one
        EtcdServer.wait_for(lambda: file_addrs(state_dir) == [be.addr], 10, what="a good state file")
        assert slb.alive()
    finally:
        relay.close()


@pytest.mark.timeout(60)
def test_unwritable_state_dir_logs_once_and_keeps_running(etcd):
    bes = [peers.start_c_backend("u%d" % i) for i in range(2)]
    etcd.put(PREFIX + "k0", bes[0].addr)
    missing = os.path.join(tempfile.mkdtemp(prefix="sidelb-state-"), "no", "such", "dir")
    cfg = config(etcd.url, state_dir=missing)
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    EtcdServer.wait_for(lambda: set(spread(stub, 4)) == {"u0"}, 10, what="the backend from etcd")
    EtcdServer.wait_for(lambda: "is not persisted" in slb.log(), 10, what="the write to fail")
    etcd.put(PREFIX + "k1", bes[1].addr)  # a second change, a second failed write
    EtcdServer.wait_for(lambda: set(spread(stub, 8)) == {"u0", "u1"}, 10, what="the second backend")
    time.sleep(2.0)  # the second write is due SLB_CLUSTER_STATE_WRITE_MS (1 s) after the change
    lines = [ln for ln in slb.log().splitlines() if "is not persisted" in ln]
    assert len(lines) == 1, lines
    assert missing in lines[0] and "No such file or directory" in lines[0], lines[0]
    assert not os.path.exists(missing)
    assert slb.alive()
    assert set(spread(stub, 8)) == {"u0", "u1"}


@pytest.mark.timeout(60)
def test_a_burst_of_changes_is_one_write(etcd):
    bes = [peers.start_c_backend("w%d" % i) for i in range(2)]
    etcd.put(PREFIX + "k0", bes[0].addr)
    for i in range(48):  # a table of 50 endpoints (these never take a call here)
        etcd.put(PREFIX + "f%02d" % i, json.dumps({"addr": "127.0.0.1:%d" % (1 + i), "weight": 1 + i, "zone": "z"}))
    slb = start_sidelb(config(etcd.url))
    EtcdServer.wait_for(lambda: PERSISTED in slb.log(), 10, what="the first write")
    time.sleep(1.5)
    before = slb.log().count(PERSISTED)
    t0 = time.monotonic()
    for w in range(1, 31):  # 30 weight changes
        etcd.put(PREFIX + "k1", json.dumps({"addr": bes[1].addr, "weight": w}))
    burst = time.monotonic() - t0
    EtcdServer.wait_for(lambda: len(file_addrs(slb.state_dir)) == 50
                        and [e["value"].get("weight") for e in state_file(slb.state_dir)["endpoints"]
                             if e["key"] == PREFIX + "k1"] == [30], 10, what="the last change in the file")
    time.sleep(1.5)
    writes = slb.log().count(PERSISTED) - before
    # one write per second of burst at most (a burst that straddles a write costs one more)
    assert 1 <= writes <= 2 + int(burst), (writes, burst)
    took = re.findall(r"table persisted \((\d+) endpoints.*? in ([0-9.]+) ms", slb.log())
    print("state file writes (thread pool, with fsync): %s" % ", ".join("%s endpoints %s ms" % t for t in took))


@pytest.mark.timeout(60)
def test_reload_writes_the_old_servers_pending_change(etcd):
    """A change less than a second old at a SIGHUP, with etcd gone right after:
    the old server writes it as it is retired (the new one, stale, writes
    nothing), so a restart would not lose it."""
    bes = [peers.start_c_backend("h%d" % i) for i in range(2)]
    etcd.put(PREFIX + "k0", bes[0].addr)
    relay = Relay(etcd.port)
    try:
        cfg = config(relay.url)
        slb = start_sidelb(cfg)
        state_dir = slb.state_dir
        EtcdServer.wait_for(lambda: file_addrs(state_dir) == [bes[0].addr], 10, what="the first write")
        etcd.put(PREFIX + "k1", bes[1].addr)
        EtcdServer.wait_for(lambda: len(cluster_info(cfg)["backends"]) == 2, 10, what="the change")
        relay.cut()
        cfg["state_dir"] = state_dir
        with open(slb.config_path, "w") as f:
            json.dump(with_test_workers(cfg), f)
        slb.signal(signal.SIGHUP)
        EtcdServer.wait_for(lambda: file_addrs(state_dir) == sorted(b.addr for b in bes), 10,
                            what="the pending change in the file")
        EtcdServer.wait_for(lambda: "reloaded" in slb.log(), 10, what="the reload")
        assert cluster_info(cfg)["stale"] is True
        assert not [f for f in os.listdir(state_dir) if ".tmp." in f]
    finally:
        relay.close()
