"""Registration of local services by the daemon (lib/register.c), with a real
etcd-server: key and lease, SIGTERM revokes at once, kill -9 leaves it to the
lease's TTL, and end to end: one sidelb registers two local backends, a second
sidelb discovers them through etcd and balances over both, and a backend that
turns NOT_SERVING stops getting calls."""

import collections
import signal
import time

import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import simple_config, start_sidelb

TTL = 2


def registering_config(etcd, prefix, backends, ttl=TTL, health=True):
    """A sidelb that registers backends under prefix (its own listener serves them statically)."""
    cfg = simple_config([b.addr for b in backends])
    cfg["etcd"] = {"endpoints": [etcd.url]}
    cfg["register"] = []
    for b in backends:
        entry = {"prefix": prefix, "address": b.addr, "ttl_s": ttl}
        if health:
            entry["health_check"] = {"service": "", "interval_ms": 300, "timeout_ms": 300}
        cfg["register"].append(entry)
    return cfg


def discovering_config(etcd, prefix):
    cfg = simple_config([])
    cfg["clusters"][0]["discovery"] = {"etcd_prefix": prefix}
    cfg["etcd"] = {"endpoints": [etcd.url]}
    return cfg


def key_of(prefix, b):
    return prefix + b.addr


@pytest.mark.serial  # the key revoked within 1 s of SIGTERM
@pytest.mark.timeout(40)
def test_key_appears_with_lease_and_sigterm_revokes_it():
    etcd = EtcdServer()
    b = peers.start_c_backend("r1")
    prefix = "/sidelb-test/reg/"
    slb = start_sidelb(registering_config(etcd, prefix, [b]), extra_args=["--grace-ms", "200"])
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b)) == b.addr, 5, what="key registered")
    kv = etcd.get_kv(key_of(prefix, b))
    assert kv["lease"] != 0
    ttl, granted = etcd.lease_ttl(kv["lease"])
    assert granted == TTL and ttl > 0
    # kept alive past its TTL
    time.sleep(TTL + 1)
    assert etcd.get(key_of(prefix, b)) == b.addr

    t0 = time.monotonic()
    slb.signal(signal.SIGTERM)
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b)) is None, 1.0, interval=0.02, what="key revoked on SIGTERM")
    assert slb.wait(5) == 0
    assert time.monotonic() - t0 < 5


@pytest.mark.timeout(40)
def test_kill9_key_expires_within_ttl():
    etcd = EtcdServer()
    b = peers.start_c_backend("r1")
    prefix = "/sidelb-test/kill/"
    slb = start_sidelb(registering_config(etcd, prefix, [b], health=False))
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b)) == b.addr, 5, what="key registered")
    slb.kill9()
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b)) is None, TTL + 1, what="key expired after kill -9")


@pytest.mark.timeout(40)
def test_register_value_formats():
    etcd = EtcdServer()
    b1, b2 = peers.start_c_backend("f1"), peers.start_c_backend("f2")
    cfg = registering_config(etcd, "/fmt/", [b1, b2], health=False)
    cfg["register"][0].update({"format": "etcd_naming", "metadata": {"v": 1}})
    cfg["register"][1].update({"format": "json", "weight": 5, "zone": "a"})
    t0 = int(time.time() * 1000)
    start_sidelb(cfg)
    etcd.wait_for(lambda: len(etcd.range_prefix("/fmt/")) == 2, 5, what="both keys")
    t1 = int(time.time() * 1000)
    got = etcd.range_prefix("/fmt/")
    # the JSON formats end with the registration's wall-clock time (slow start ramps from it on every host)
    for key, want in (("/fmt/" + b1.addr, '{"Op":0,"Addr":"%s","Metadata":{"v":1}' % b1.addr),
                      ("/fmt/" + b2.addr, '{"addr":"%s","weight":5,"zone":"a"' % b2.addr)):
        head, sep, at = got[key].rpartition(',"registered_at_ms":')
        assert sep and head == want, got[key]
        assert t0 <= int(at.rstrip("}")) <= t1, (got[key], t0, t1)


def spread(stub, n):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


@pytest.mark.serial  # deregistration within 1.5 s, a fixed 0.5 s sleep
@pytest.mark.timeout(60)
def test_end_to_end_register_discover_balance_and_health_gate():
    etcd = EtcdServer()
    b1, b2 = peers.start_c_backend("e1"), peers.start_c_backend("e2")
    prefix = "/grpclb/sidelb.test.Echo/"
    start_sidelb(registering_config(etcd, prefix, [b1, b2]))
    etcd.wait_for(lambda: len(etcd.range_prefix(prefix)) == 2, 5, what="two backends registered")

    client_side = start_sidelb(discovering_config(etcd, prefix))
    stub = peers.echo_stub(client_side.addr)
    etcd.wait_for(lambda: set(spread(stub, 20)) == {"e1", "e2"}, 5, what="calls reach both backends")
    counts = spread(stub, 100)
    assert counts["e1"] >= 30 and counts["e2"] >= 30, counts

    # e1 turns NOT_SERVING: its key goes, the second sidelb stops sending it calls
    b1.set_health(False)
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b1)) is None, 1.5, what="e1 deregistered")
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b2)) == b2.addr, 0.1, what="e2 still registered")
    time.sleep(0.5)  # the watch event reaches the second sidelb
    assert spread(stub, 60) == {"e2": 60}

    # SERVING again: registered again, gets calls again
    b1.set_health(True)
    etcd.wait_for(lambda: etcd.get(key_of(prefix, b1)) == b1.addr, 2, what="e1 registered again")
    etcd.wait_for(lambda: spread(stub, 20).get("e1", 0) > 0, 5, what="e1 gets calls again")
