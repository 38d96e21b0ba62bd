"""Hash keys that work on one host (issue 10, item 7).

Every app of a host reaches its sidecar from 127.0.0.1, so a hash policy keyed
on the source address sends every call of the host to one backend. With
"hash_on": "source_ip_port" each app connection has its own key: the calls of
one gRPC channel (one connection) stay on one backend, and the channels spread.
Each channel here has its own subchannel pool, so it opens its own connection,
as separate app processes would.
"""

import collections
import json
import subprocess

import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb

CHANNELS = 12  # all 12 on one of 3 backends by chance: 3 * (1/3)**12 < 1e-5
CALLS = 6


def backends_per_channel(addr, metadata=()):
    """{channel index: Counter of backend ids} for CHANNELS channels of CALLS calls each."""
    chans = [peers.channel(addr, **{"grpc.use_local_subchannel_pool": 1}) for _ in range(CHANNELS)]
    try:
        got = {}
        for i, ch in enumerate(chans):
            stub = peers.echo_stub(ch)
            got[i] = collections.Counter(
                stub.Unary(req(payload=b"x"), metadata=metadata, timeout=5).backend_id for _ in range(CALLS))
        return got
    finally:
        for ch in chans:
            ch.close()


def start(policy, options, n=3):
    bes = [peers.start_c_backend("hk%d" % i) for i in range(n)]
    return bes, start_sidelb(simple_config([b.addr for b in bes], policy=policy, policy_options=options))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("policy", ["source_ip_hash", "ring_hash", "maglev"])
def test_source_ip_port_keys_each_app_connection(policy):
    _, slb = start(policy, {"hash_on": "source_ip_port"})
    got = backends_per_channel(slb.addr)
    for i, c in got.items():
        assert len(c) == 1, "channel %d's calls went to %s" % (i, dict(c))  # one connection, one backend
    used = {c.most_common(1)[0][0] for c in got.values()}
    assert len(used) > 1, "all %d channels on %s" % (CHANNELS, used)
    assert "share one key" not in slb.log()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("options", [{}, {"hash_on": "source_ip"}], ids=["default", "source_ip"])
def test_source_ip_puts_every_app_of_the_host_on_one_backend(options):
    """The problem the option solves, and the one notice that names it."""
    _, slb = start("source_ip_hash", options)
    got = backends_per_channel(slb.addr)
    used = collections.Counter()
    for c in got.values():
        used.update(c)
    assert len(used) == 1 and sum(used.values()) == CHANNELS * CALLS, used
    log = slb.log()
    assert log.count("share one key") == 1, log[-2000:]
    assert '"hash_on": "source_ip_port"' in log


@pytest.mark.timeout(60)
def test_source_ip_hash_on_header_keys_across_connections():
    """hash_on header: the key follows the header's value, whatever connection carries it."""
    _, slb = start("source_ip_hash", {"hash_on": "header", "hash_header": "x-tenant"})
    owner = {}
    for tenant in ["t%d" % i for i in range(CHANNELS)]:
        got = backends_per_channel(slb.addr, metadata=(("x-tenant", tenant),))
        seen = set()
        for c in got.values():
            seen.update(c)
        assert len(seen) == 1, (tenant, seen)  # 12 connections, one backend
        owner[tenant] = seen.pop()
    assert len(set(owner.values())) > 1, owner


@pytest.mark.timeout(30)
@pytest.mark.parametrize("options,message", [
    ({"hash_on": "port"}, 'hash_on: unknown value "port" (known: source_ip, source_ip_port, header)'),
    ({"hash_on": "header"}, 'missing required key "hash_header"'),
    ({"hash_on": "source_ip_port", "hash_header": "x"}, 'hash_header: only used with "hash_on": "header"'),
])
def test_check_config_rejects_bad_hash_on(tmp_path, options, message):
    f = tmp_path / "c.json"
    f.write_text(json.dumps(simple_config(["127.0.0.1:1"], policy="maglev", policy_options=options)))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr
