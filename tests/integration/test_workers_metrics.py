"""/metrics and /clusters with "workers": 2: the calls, connections and
backend counters of both workers (and the control loop's health checks)
added up, connectivity states from the workers (the control loop has no
call connections), and the exposition still passes `promtool check metrics`.

App connections go to the worker with the fewest, so four connections held
open at once are spread over both workers; every total below is the calls
the test made, which a scrape reading one loop alone could not show."""

import json
import socket
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import start_with_admin_listener
from test_admin import http, parse_metrics
from test_metrics import codes, promtool_and_docs, value
from test_tls import c_tls_backend, make_pki

SERVICE = "sidelb.test.Echo"
CONNS = 4
CALLS_PER_CONN = 15


def config(echo, denied, slow, access_log):
    def listener(name, cluster):
        return {"name": name, "address": "127.0.0.1:%d" % peers.free_port(),
                "routes": [{"service": SERVICE, "cluster": cluster}]}

    def cluster(name, backends):
        return {"name": name, "discovery": {"static": backends}, "policy": {"round_robin": {}}}

    return {"workers": 2,
            "listeners": [listener("l-echo", "echo"), listener("l-denied", "denied"), listener("l-slow", "slow")],
            "clusters": [cluster("echo", echo), cluster("denied", denied), cluster("slow", slow)],
            "metrics": {"max_methods": 2}, "access_log": {"path": access_log}}


def own_stubs(addr, n):
    """n stubs, each on an app connection of its own (no shared subchannel)."""
    return [peers.echo_stub(peers.channel(addr, **{"grpc.use_local_subchannel_pool": 1})) for _ in range(n)]


def connections(addr, n):
    """n app connections, each with a call done, so all n are open at once."""
    stubs = own_stubs(addr, n)
    for s in stubs:
        s.Unary(req(payload=b"hello"), timeout=5)
    return stubs


def scrape(slb):
    status, _, body = http(slb.admin_port, "GET", "/metrics")
    assert status == 200
    return body.decode()


def clusters(slb):
    status, _, body = http(slb.admin_port, "GET", "/clusters")
    assert status == 200
    return {c["name"]: c for c in json.loads(body)}


@pytest.mark.timeout(90)
def test_metrics_and_clusters_add_up_over_two_workers(tmp_path):
    echo = [peers.start_c_backend("e%d" % i) for i in range(3)]
    denied = peers.start_c_backend("denied", extra_args=["--fail-status", "7"])
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "3000"])
    log_path = str(tmp_path / "access.log")  # each worker writes its own lines to it
    cfg = config([b.addr for b in echo], [denied.addr], [slow.addr], log_path)
    slb = start_with_admin_listener(cfg)
    port = {l["name"]: l["address"] for l in cfg["listeners"]}

    # four connections open at once: two on each worker
    stubs = connections(port["l-echo"], CONNS)
    m = parse_metrics(scrape(slb))
    assert value(m, "sidelb_workers") == 2
    assert value(m, "sidelb_scrape_workers_skipped") == 0
    assert value(m, "sidelb_downstream_connections") == CONNS
    assert value(m, "sidelb_listener_connections", listener="l-echo") == CONNS
    for _ in range(CALLS_PER_CONN - 1):
        for s in stubs:
            s.Unary(req(payload=b"12345678"), timeout=5)
    n_echo = CONNS * CALLS_PER_CONN
    n_denied = 0
    denied_stubs = own_stubs(port["l-denied"], 2)  # kept: their connections stay open
    for s in denied_stubs:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                s.Unary(req(payload=b"x"), timeout=5)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            n_denied += 1

    # calls in flight on the slow backend, over two connections (one per worker)
    pool = ThreadPoolExecutor(4)
    slow_stubs = own_stubs(port["l-slow"], 2)
    futures = [pool.submit(s.Unary, req(payload=b"zz"), timeout=20) for s in slow_stubs for _ in range(2)]
    peers.wait_for(lambda: clusters(slb)["slow"]["backends"][0]["outstanding"] == 4, timeout=10,
                   what="4 calls in flight on the slow backend in /clusters")
    m = parse_metrics(scrape(slb))
    assert value(m, "sidelb_calls_in_flight") == 4
    assert value(m, "sidelb_backend_outstanding_calls", cluster="slow", backend=slow.addr) == 4
    # the drain action says how many calls finish there: every worker's
    status, _, body = http(slb.admin_port, "POST", "/clusters/slow/backends/%s/drain" % urllib.parse.quote(slow.addr))
    assert status == 200 and b"drained (4 calls in flight finish there)" in body, body
    for f in futures:
        assert f.result().payload == b"zz"

    # everything has ended: the totals are the calls made, the gauges back to 0
    def settled():
        m = parse_metrics(scrape(slb))
        return value(m, "sidelb_calls_in_flight") == 0 and \
            value(m, "sidelb_backend_outstanding_calls", cluster="slow", backend=slow.addr) == 0
    peers.wait_for(settled, timeout=10, what="calls in flight back to 0")
    n_calls = n_echo + n_denied + 4
    peers.wait_for(lambda: value(parse_metrics(scrape(slb)), "sidelb_access_log_lines_total") == n_calls, timeout=10,
                   what="an access log line per call, over both workers")
    def lines():
        with open(log_path) as f:
            return f.read().splitlines()
    peers.wait_for(lambda: len(lines()) >= n_calls, timeout=5, what="%d lines in the file" % n_calls)
    assert len(lines()) == n_calls
    text = scrape(slb)
    m = parse_metrics(text)
    assert codes(m, "sidelb_calls_total", listener="l-echo", cluster="echo") == {"OK": n_echo}
    assert codes(m, "sidelb_calls_total", listener="l-denied", cluster="denied") == {"PERMISSION_DENIED": n_denied}
    assert codes(m, "sidelb_calls_total", listener="l-slow", cluster="slow") == {"OK": 4}
    assert value(m, "sidelb_calls_started_total") == n_calls
    per_backend = [codes(m, "sidelb_upstream_attempts_total", cluster="echo", backend=b.addr) for b in echo]
    assert all(set(c) == {"OK"} and c["OK"] > 0 for c in per_backend), per_backend
    assert sum(c["OK"] for c in per_backend) == n_echo
    for b, c in zip(echo, per_backend):  # what each backend itself served
        b.wait_stats(lambda st: st["calls"] == c["OK"])
        assert value(m, "sidelb_upstream_attempt_duration_seconds_count", cluster="echo", backend=b.addr) == c["OK"]
    assert codes(m, "sidelb_upstream_attempts_total", backend=denied.addr) == {"PERMISSION_DENIED": n_denied}
    assert value(m, "sidelb_call_duration_seconds_count", cluster="echo") == n_echo
    assert value(m, "sidelb_call_duration_seconds_count", cluster="slow") == 4
    assert value(m, "sidelb_call_duration_seconds_bucket", cluster="slow", le="2.5") == 0
    assert value(m, "sidelb_request_bytes_total", cluster="echo") > 0
    # per method: one series per name, both workers' calls in it
    assert codes(m, "sidelb_method_calls_total", cluster="echo", method="/%s/Unary" % SERVICE) == {"OK": n_echo}
    assert value(m, "sidelb_downstream_connections") == CONNS + 4
    assert value(m, "sidelb_downstream_connections_total") == CONNS + 4
    assert value(m, "sidelb_upstream_connections") >= 5  # each worker connects to the backends it calls
    for b in echo:
        assert value(m, "sidelb_backend_state", cluster="echo", backend=b.addr, state="READY") == 1
        assert value(m, "sidelb_backend_healthy", cluster="echo", backend=b.addr) == 1
        assert value(m, "sidelb_backend_connections", cluster="echo", backend=b.addr) >= 1
    assert value(m, "sidelb_backend_drained", cluster="slow", backend=slow.addr) == 1
    assert value(m, "sidelb_backend_healthy", cluster="slow", backend=slow.addr) == 0
    assert 0 <= value(m, "sidelb_scrape_pause_seconds") < 1
    promtool_and_docs(tmp_path, text)

    # /clusters: READY from the workers' connections, outstanding back to 0
    c = clusters(slb)
    assert c["echo"]["state"] == "READY"
    assert c["echo"]["waiting"] == 0
    for b in c["echo"]["backends"]:
        assert b["state"] == "READY" and b["healthy"] and b["outstanding"] == 0 and b["connections"] >= 1, b
    assert c["slow"]["backends"][0]["outstanding"] == 0
    pool.shutdown()


def raw_conns(port, n):
    """n plain TCP connections to port, left open (no bytes sent yet)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]


@pytest.mark.timeout(90)
def test_tls_counters_add_up_over_two_workers(tmp_path):
    """TLS handshakes with backends: the control loop's health checks plus both workers' calls; failed
    app handshakes on a TLS listener: one on each worker."""
    pki = make_pki(str(tmp_path))
    bes = [c_tls_backend(pki, "t%d" % i) for i in range(2)]
    cfg = {"workers": 2,
           "listeners": [{"name": "l-tls", "address": "127.0.0.1:%d" % peers.free_port(),
                          "routes": [{"service": SERVICE, "cluster": "echo"}],
                          "tls": {"cert_file": pki["server.pem"], "key_file": pki["server.key"]}}],
           "clusters": [{"name": "echo", "discovery": {"static": [b.addr for b in bes]},
                         "policy": {"round_robin": {}}, "tls": {"ca_file": pki["ca.pem"]},
                         "health_check": {"interval_ms": 200}}]}
    slb = start_with_admin_listener(cfg)
    port = int(cfg["listeners"][0]["address"].rsplit(":", 1)[1])
    creds = grpc.ssl_channel_credentials(root_certificates=open(pki["ca.pem"], "rb").read())
    stubs = [peers.echo_grpc.EchoStub(grpc.secure_channel("127.0.0.1:%d" % port, creds,
                                                          options=[("grpc.use_local_subchannel_pool", 1)]))
             for _ in range(2)]
    for i in range(6):
        for s in stubs:  # one connection on each worker, each calling both backends
            assert s.Unary(req(payload=b"t%d" % i), timeout=10).payload == b"t%d" % i
    m = parse_metrics(scrape(slb))
    conns = value(m, "sidelb_upstream_connections_total")
    assert conns >= 4, conns  # each worker connected to each backend
    c = clusters(slb)["echo"]
    assert all(b["health"] == "SERVING" and b["state"] == "READY" for b in c["backends"]), c
    # the control loop's health checks (one connection per backend at least) and the workers' pools
    assert value(m, "sidelb_upstream_tls_handshakes_total", cluster="echo") >= conns + len(bes)
    assert value(m, "sidelb_upstream_tls_handshake_failures_total", cluster="echo") == 0

    # two clients that are not TLS, connected at once (one per worker), then send a cleartext preface
    socks = raw_conns(port, 2)
    peers.wait_for(lambda: value(parse_metrics(scrape(slb)), "sidelb_downstream_connections") == 4, timeout=10,
                   what="4 app connections")
    for s in socks:
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    peers.wait_for(lambda: value(parse_metrics(scrape(slb)), "sidelb_downstream_tls_handshake_failures_total",
                                 listener="l-tls") == 2, timeout=10, what="2 failed handshakes")
    for s in socks:
        s.close()
    m = parse_metrics(scrape(slb))
    assert value(m, "sidelb_downstream_tls_handshake_failures_total", listener="l-tls") == 2
    assert slb.alive()
