"""/metrics against calls whose outcome the test knows: calls per listener,
cluster and gRPC code, attempts per backend, retries, latency histograms and
bytes; the whole exposition passes `promtool check metrics` (Debian's
prometheus package)."""

import os
import re
import subprocess
import urllib.request

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import start_sidelb
from test_admin import parse_metrics

SERVICE = "sidelb.test.Echo"


def retry_config():
    return {"methodConfig": [{"name": [{"service": SERVICE}],
                              "retryPolicy": {"maxAttempts": 2, "initialBackoff": "0.01s", "maxBackoff": "0.05s",
                                              "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}


def config(clusters):
    """One listener per cluster (same service, so each call's outcome is set by the listener it goes to)."""
    listeners, cls = [], []
    for name, backends, extra in clusters:
        listeners.append({"name": "l-" + name, "address": "127.0.0.1:%d" % peers.free_port(),
                          "routes": [{"service": SERVICE, "cluster": name}]})
        c = {"name": name, "discovery": {"static": backends}, "policy": {"round_robin": {}}}
        c.update(extra)
        cls.append(c)
    admin = peers.free_port()
    return {"listeners": listeners, "clusters": cls, "admin": {"address": "127.0.0.1:%d" % admin}}, admin


def scrape(admin_port):
    return urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()


def value(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0)


def codes(m, name, **labels):
    """{grpc_code: value} of the samples of name that carry labels."""
    out = {}
    for (n, lab), v in m.items():
        d = dict(lab)
        if n == name and all(d.get(k) == x for k, x in labels.items()):
            out[d["grpc_code"]] = out.get(d["grpc_code"], 0) + v
    return out


def promtool_and_docs(tmp_path, text):
    """promtool accepts the exposition, and docs/metrics.md lists every family in it."""
    f = tmp_path / "metrics.txt"
    f.write_text(text)
    r = subprocess.run(["promtool", "check", "metrics"], stdin=open(f), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", (r.stdout, r.stderr)
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "metrics.md")).read()
    for name in re.findall(r"^# TYPE (\S+) ", text, re.M):
        assert "`%s`" % name in doc, "%s is not in docs/metrics.md" % name


def call_n(addr, n, payload=b"12345678"):
    stub = peers.echo_stub(addr)
    got = []
    for _ in range(n):
        try:
            stub.Unary(req(payload=payload), timeout=5)
            got.append(grpc.StatusCode.OK)
        except grpc.RpcError as e:
            got.append(e.code())
    return got


def test_counters_per_code_histograms_and_promtool(tmp_path):
    ok = peers.start_c_backend("ok", extra_args=["--extra-delay-ms", "30"])
    denied = peers.start_c_backend("denied", extra_args=["--fail-status", "7"])
    flaky = peers.start_c_backend("flaky", extra_args=["--fail-status", "14"])
    good = peers.start_c_backend("good")
    dead = "127.0.0.1:%d" % peers.free_port()
    cfg, admin = config([
        ("ok", [ok.addr], {}),
        ("denied", [denied.addr], {}),
        ("dead", [dead], {"wait_for_ready_ms": 0}),
        ("retry", [flaky.addr, good.addr], {"service_config": retry_config()}),
    ])
    slb = start_sidelb(cfg)
    assert peers.wait_port(admin, 5)
    port = {l["name"][2:]: l["address"] for l in cfg["listeners"]}

    assert call_n(port["ok"], 10) == [grpc.StatusCode.OK] * 10
    assert call_n(port["denied"], 7) == [grpc.StatusCode.PERMISSION_DENIED] * 7
    assert call_n(port["dead"], 5) == [grpc.StatusCode.UNAVAILABLE] * 5
    assert call_n(port["retry"], 12) == [grpc.StatusCode.OK] * 12

    text = scrape(admin)
    m = parse_metrics(text)
    # calls: exactly the codes the apps saw
    assert codes(m, "sidelb_calls_total", listener="l-ok") == {"OK": 10}
    assert codes(m, "sidelb_calls_total", listener="l-denied", cluster="denied") == {"PERMISSION_DENIED": 7}
    assert codes(m, "sidelb_calls_total", listener="l-dead", cluster="dead") == {"UNAVAILABLE": 5}
    assert codes(m, "sidelb_calls_total", listener="l-retry", cluster="retry") == {"OK": 12}
    # attempts per backend
    assert codes(m, "sidelb_upstream_attempts_total", cluster="ok", backend=ok.addr) == {"OK": 10}
    assert codes(m, "sidelb_upstream_attempts_total", backend=denied.addr) == {"PERMISSION_DENIED": 7}
    dead_attempts = codes(m, "sidelb_upstream_attempts_total", backend=dead)
    assert set(dead_attempts) == {"UNAVAILABLE"} and 1 <= dead_attempts["UNAVAILABLE"] <= 5, dead_attempts
    retries = value(m, "sidelb_upstream_retries_total", cluster="retry")
    assert retries >= 1
    assert codes(m, "sidelb_upstream_attempts_total", backend=flaky.addr) == {"UNAVAILABLE": retries}
    assert codes(m, "sidelb_upstream_attempts_total", backend=good.addr) == {"OK": 12}
    assert value(m, "sidelb_upstream_hedges_total", cluster="retry") == 0
    # latency histograms: count = calls; the ok backend adds 30 ms to each reply
    assert value(m, "sidelb_call_duration_seconds_count", cluster="ok") == 10
    assert value(m, "sidelb_call_duration_seconds_bucket", cluster="ok", le="0.025") == 0
    assert value(m, "sidelb_call_duration_seconds_bucket", cluster="ok", le="30") == 10
    assert value(m, "sidelb_call_duration_seconds_bucket", cluster="ok", le="+Inf") == 10
    assert 0.3 <= value(m, "sidelb_call_duration_seconds_sum", cluster="ok") < 50
    assert value(m, "sidelb_call_duration_seconds_count", cluster="retry") == 12
    assert value(m, "sidelb_upstream_attempt_duration_seconds_count", cluster="ok", backend=ok.addr) == 10
    assert value(m, "sidelb_upstream_attempt_duration_seconds_bucket", cluster="ok", backend=ok.addr, le="0.025") == 0
    assert value(m, "sidelb_upstream_attempt_duration_seconds_count", cluster="retry", backend=good.addr) == 12
    # bytes: 10 requests of one gRPC message each (5-byte prefix + the serialized request)
    assert value(m, "sidelb_request_bytes_total", cluster="ok") == 10 * (5 + len(req(payload=b"12345678").SerializeToString()))
    assert value(m, "sidelb_response_bytes_total", cluster="ok") > 0
    # connections, process, build
    assert value(m, "sidelb_downstream_connections_total") == 4
    assert value(m, "sidelb_upstream_connections") >= 3
    assert value(m, "sidelb_process_open_fds") > 5
    assert value(m, "sidelb_process_resident_memory_bytes") > 1 << 20
    assert value(m, "sidelb_process_uptime_seconds") > 0
    assert value(m, "sidelb_build_info", version="0.1.0") == 1

    promtool_and_docs(tmp_path, text)


def test_limit_rejections_are_counted():
    slow = peers.start_c_backend("slow", extra_args=["--extra-delay-ms", "1000"])
    cfg, admin = config([("c", [slow.addr], {"max_calls": 1})])
    slb = start_sidelb(cfg)
    addr = cfg["listeners"][0]["address"]
    stub = peers.echo_stub(addr)
    first = stub.Unary.future(req(payload=b"a"), timeout=10)
    peers.wait_for(lambda: value(parse_metrics(scrape(admin)), "sidelb_calls_in_flight") >= 1, 10, 0.02,
                   what="a call in flight")
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"b"), timeout=5)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first.result()
    m = parse_metrics(scrape(admin))
    assert value(m, "sidelb_cluster_limit_rejections_total", cluster="c", limit="max_calls") == 1
    assert codes(m, "sidelb_calls_total", cluster="c") == {"OK": 1, "RESOURCE_EXHAUSTED": 1}


def test_etcd_and_registration_metrics(tmp_path):
    from etcd_harness import EtcdServer

    etcd = EtcdServer()
    b = peers.start_c_backend("reg")
    others = [peers.start_c_backend("d%d" % i) for i in range(2)]
    cfg, admin = config([("disc", [], {})])
    cfg["clusters"][0]["discovery"] = {"etcd_prefix": "/m/disc/"}
    cfg["etcd"] = {"endpoints": [etcd.url]}
    cfg["register"] = [{"prefix": "/m/reg/", "address": b.addr, "ttl_s": 5}]
    start_sidelb(cfg)

    def m():
        return parse_metrics(scrape(admin))

    EtcdServer.wait_for(lambda: value(m(), "sidelb_registration_state", prefix="/m/reg/", address=b.addr,
                                      state="REGISTERED") == 1, 10, what="registered")
    EtcdServer.wait_for(lambda: value(m(), "sidelb_etcd_watch_revision", cluster="disc", prefix="/m/disc/") > 0, 10,
                        what="watch listed")
    rev = 0
    for o in others:
        rev = int(etcd.put("/m/disc/" + o.addr, o.addr)["header"]["revision"])
    EtcdServer.wait_for(lambda: value(m(), "sidelb_etcd_watch_revision", cluster="disc", prefix="/m/disc/") >= rev, 10,
                        what="watch at revision %d" % rev)
    s = m()
    assert value(s, "sidelb_etcd_events_total") == 2
    assert value(s, "sidelb_cluster_backends", cluster="disc") == 2
    assert value(s, "sidelb_etcd_endpoint", endpoint=etcd.url) == 1
    assert 0 <= value(s, "sidelb_etcd_last_contact_age_seconds") < 10
    assert value(s, "sidelb_etcd_errors_total", kind="transport") == 0
    assert sum(v for (n, lab), v in s.items() if n == "sidelb_registration_state") == 1
    text = scrape(admin)
    promtool_and_docs(tmp_path, text)

    etcd.stop()  # the watch stream breaks, requests find nobody: transport errors, contact ages
    EtcdServer.wait_for(lambda: value(m(), "sidelb_etcd_errors_total", kind="transport") >= 1, 15,
                        what="transport errors counted")
    EtcdServer.wait_for(lambda: value(m(), "sidelb_etcd_last_contact_age_seconds") >= 1, 15, what="contact ages")


def test_method_labels_are_capped(tmp_path):
    b = peers.start_c_backend("m")
    cfg, admin = config([("c", [b.addr], {})])
    cfg["metrics"] = {"max_methods": 2}
    start_sidelb(cfg)
    addr = cfg["listeners"][0]["address"]
    ch = peers.channel(addr)
    methods = ["/sidelb.test.Echo/Unary", "/sidelb.test.Echo/M1", "/sidelb.test.Echo/M2", "/sidelb.test.Echo/M3"]
    seen = {}
    for method, n in zip(methods, (3, 2, 1, 1)):
        call = ch.unary_unary(method, request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=lambda x: x)
        for _ in range(n):
            try:
                call(req(payload=b"m"), timeout=5)
                code = "OK"
            except grpc.RpcError as e:
                code = e.code().name
            seen[method] = code
    ch.close()
    assert seen["/sidelb.test.Echo/Unary"] == "OK" and seen["/sidelb.test.Echo/M1"] == "UNIMPLEMENTED"
    text = scrape(admin)
    m = parse_metrics(text)
    assert codes(m, "sidelb_method_calls_total", cluster="c", method="/sidelb.test.Echo/Unary") == {"OK": 3}
    assert codes(m, "sidelb_method_calls_total", cluster="c", method="/sidelb.test.Echo/M1") == {"UNIMPLEMENTED": 2}
    # past 2 distinct methods: "other"
    assert codes(m, "sidelb_method_calls_total", cluster="c", method="other") == {"UNIMPLEMENTED": 2}
    assert {dict(lab)["method"] for (n, lab) in m if n == "sidelb_method_calls_total"} == \
        {"/sidelb.test.Echo/Unary", "/sidelb.test.Echo/M1", "other"}
    assert value(m, "sidelb_method_call_duration_seconds_count", cluster="c", method="other") == 2
    assert value(m, "sidelb_method_call_duration_seconds_count", cluster="c", method="/sidelb.test.Echo/Unary") == 3
    assert value(m, "sidelb_calls_total", listener="l-c", cluster="c", grpc_code="OK") == 3
    promtool_and_docs(tmp_path, text)


def test_method_labels_are_off_by_default():
    b = peers.start_c_backend("m")
    cfg, admin = config([("c", [b.addr], {})])
    start_sidelb(cfg)
    assert call_n(cfg["listeners"][0]["address"], 2) == [grpc.StatusCode.OK] * 2
    assert "sidelb_method_" not in scrape(admin)


@pytest.mark.parametrize("bad, message", [
    ({"metrics": {"max_methods": 1001}}, "metrics.max_methods: 1001 is out of range"),
    ({"metrics": {"per_method": True}}, "metrics.per_method: unknown key"),
    ({"access_log": {"path": "relative.log"}}, "access_log.path: \"relative.log\" is not an absolute path"),
    ({"access_log": {"path": "/tmp/x.log", "sample_rate": 1.5}}, "access_log.sample_rate: 1.5 must be <= 1"),
    ({"access_log": {"path": "/tmp/x.log", "max_lines_per_second": 0}}, "access_log.max_lines_per_second: 0 is out"),
    ({"access_log": {}}, "access_log: missing required key \"path\""),
])
def test_bad_metrics_and_access_log_keys_are_rejected(tmp_path, bad, message):
    cfg, _ = config([("c", ["127.0.0.1:1"], {})])
    cfg.update(bad)
    f = tmp_path / "c.json"
    f.write_text(__import__("json").dumps(cfg))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True)
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_health_changes_are_counted():
    b = peers.start_c_backend("h", extra_args=["--health", "NOT_SERVING"])
    cfg, admin = config([("c", [b.addr], {"health_check": {"service": "", "interval_ms": 200, "timeout_ms": 500}})])
    start_sidelb(cfg)
    peers.wait_for(lambda: value(parse_metrics(scrape(admin)), "sidelb_backend_health_changes_total", cluster="c",
                                 backend=b.addr) >= 1, 10, what="PENDING -> NOT_SERVING counted")
    m = parse_metrics(scrape(admin))
    assert value(m, "sidelb_backend_health_changes_total", cluster="c", backend=b.addr) == 1
    assert value(m, "sidelb_backend_healthy", cluster="c", backend=b.addr) == 0
