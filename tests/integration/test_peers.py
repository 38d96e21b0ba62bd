"""Tests of the test peers themselves, straight from python3-grpcio (no sidelb).

The C backend (build/test_backend) is the subject; the semantic tests also run
against the grpcio twin (echo_server.py) so both peers stay interchangeable.
"""

import os
import queue
import time

import grpc
import pytest

import peers
from peers import req

BOTH = ["c", "py"]
NON_ASCII = "héllo ✓ 100% \u00e9\u4e16 /%20"


@pytest.fixture(scope="module")
def shared():
    """One C and one Python backend shared by the read-only semantic tests."""
    procs = {"c": peers.start_c_backend("c1"), "py": peers.start_py_backend("py1")}
    # Not tied to a single test: keep them off the per-test cleanup list.
    for p in procs.values():
        peers._procs.remove(p)
    yield procs
    for p in procs.values():
        p.stop()
        p.remove_files()


@pytest.fixture(params=BOTH)
def backend(request, shared):
    return shared[request.param]


def stub(b):
    return peers.echo_stub(b.addr)


def test_unary(backend):
    s = stub(backend)
    r = s.Unary(req(payload=b"hello"), timeout=5)
    assert r.payload == b"hello" and r.backend_id == backend.id and r.seq == 0
    r = s.Unary(req(payload=b"ignored", response_size=1000), timeout=5)
    assert len(r.payload) == 1000 and r.payload[:3] == b"abc"
    r = s.Unary(req(), timeout=5)  # empty message: a zero-length frame
    assert r.payload == b"" and r.backend_id == backend.id


def test_server_stream(backend):
    s = stub(backend)
    got = list(s.ServerStream(req(payload=b"p", response_count=50), timeout=5))
    assert [r.seq for r in got] == list(range(50))
    assert all(r.payload == b"p" and r.backend_id == backend.id for r in got)
    assert len(list(s.ServerStream(req(), timeout=5))) == 1


def test_client_stream(backend):
    s = stub(backend)
    reqs = [req(payload=b"m%d" % i) for i in range(25)]
    r = s.ClientStream(iter(reqs), timeout=5)
    assert r.received == 25 and r.payload == b"m24" and r.backend_id == backend.id
    r = s.ClientStream(iter([]), timeout=5)
    assert r.received == 0


def test_bidi_replies_as_requests_come(backend):
    s = stub(backend)
    q = queue.Queue()

    def gen():
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    call = s.Bidi(gen(), timeout=10)
    for i in range(20):
        q.put(req(payload=b"b%d" % i))
        r = next(call)  # the reply arrives before the next request is sent
        assert (r.payload, r.seq, r.received, r.backend_id) == (b"b%d" % i, i, i + 1, backend.id)
    q.put(None)
    assert list(call) == []
    assert call.code() == grpc.StatusCode.OK


@pytest.mark.parametrize("kind", BOTH)
def test_large_messages_both_ways(shared, kind):
    s = stub(shared[kind])
    big = os.urandom(4 << 20)
    assert s.Unary(req(payload=big), timeout=20).payload == big
    assert len(s.Unary(req(response_size=4 << 20), timeout=20).payload) == 4 << 20
    r = s.ClientStream(iter([req(payload=big), req(payload=big)]), timeout=20)
    assert r.received == 2 and r.payload == big
    got = list(s.Bidi(iter([req(payload=big), req(response_size=(4 << 20) + 7)]), timeout=20))
    assert got[0].payload == big and len(got[1].payload) == (4 << 20) + 7
    got = list(s.ServerStream(req(response_size=4 << 20, response_count=3), timeout=20))
    assert [len(r.payload) for r in got] == [4 << 20] * 3


def test_metadata_echo(backend):
    s = stub(backend)
    md = [("x-foo", "bar"), ("x-data-bin", b"\x00\x01\xfe\xff"), ("other", "not-echoed")]
    for call_fn in (lambda: s.Unary.with_call(req(payload=b"m"), metadata=md, timeout=5)[1],
                    lambda: s.ClientStream.with_call(iter([req()]), metadata=md, timeout=5)[1]):
        call = call_fn()
        initial = dict(call.initial_metadata())
        trailing = dict(call.trailing_metadata())
        assert initial["x-foo"] == "bar" and initial["x-data-bin"] == b"\x00\x01\xfe\xff"
        assert "other" not in initial
        assert trailing["x-trailer-x-foo"] == "bar"
        assert trailing["x-trailer-x-data-bin"] == b"\x00\x01\xfe\xff"
        assert "x-trailer-other" not in trailing
    stream = s.ServerStream(req(response_count=2), metadata=md, timeout=5)
    assert len(list(stream)) == 2
    assert dict(stream.initial_metadata())["x-foo"] == "bar"
    assert dict(stream.trailing_metadata())["x-trailer-x-foo"] == "bar"


def test_every_status_code(backend):
    s = stub(backend)
    for code in range(1, 17):
        msg = "code %d %s" % (code, NON_ASCII)
        with pytest.raises(grpc.RpcError) as ei:
            s.Unary(req(status_code=code, status_message=msg), timeout=5)
        assert ei.value.code() == peers.GRPC_CODES[code], code
        assert ei.value.details() == msg, code
    # status 0 with a message is still OK
    s.Unary(req(status_code=0, status_message="fine"), timeout=5)
    # streams: replies first, then the status
    it = s.ServerStream(req(response_count=3, status_code=9, status_message=NON_ASCII), timeout=5)
    got = []
    with pytest.raises(grpc.RpcError) as ei:
        for r in it:
            got.append(r.seq)
    assert got == [0, 1, 2]
    assert ei.value.code() == grpc.StatusCode.FAILED_PRECONDITION and ei.value.details() == NON_ASCII
    with pytest.raises(grpc.RpcError) as ei:
        list(s.Bidi(iter([req(), req(status_code=14, status_message="bye")]), timeout=5))
    assert ei.value.code() == grpc.StatusCode.UNAVAILABLE and ei.value.details() == "bye"


def test_unknown_method_is_unimplemented(backend):
    ch = peers.channel(backend.addr)
    for path in ("/sidelb.test.Echo/Nope", "/no.Such/Method"):
        fn = ch.unary_unary(path, request_serializer=lambda x: x, response_deserializer=lambda x: x)
        with pytest.raises(grpc.RpcError) as ei:
            fn(b"", timeout=5)
        assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_delay_and_deadline(backend):
    s = stub(backend)
    t0 = time.monotonic()
    s.Unary(req(delay_ms=150), timeout=5)
    assert time.monotonic() - t0 >= 0.14
    before = backend.stats()["cancelled"]
    with pytest.raises(grpc.RpcError) as ei:
        s.Unary(req(delay_ms=3000), timeout=0.2)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    backend.wait_stats(lambda st: st["cancelled"] >= before + 1, timeout=3)


def test_cancel_observed_at_backend(c_backend):
    b = c_backend("cx")
    s = stub(b)
    call = s.ServerStream(req(response_count=100000, response_size=1000), timeout=10)
    next(call)
    call.cancel()
    st = b.wait_stats(lambda st: st["cancelled_by_method"]["ServerStream"] == 1)
    assert st["active"] == 0
    call = s.Bidi(iter([req(delay_ms=5000)]), timeout=10)
    time.sleep(0.1)
    call.cancel()
    b.wait_stats(lambda st: st["cancelled_by_method"]["Bidi"] == 1)
    assert "cancelled stream" in b.log()
    # the backend still serves
    assert s.Unary(req(payload=b"ok"), timeout=5).payload == b"ok"


def test_slow_reader_bounded_memory(c_backend):
    """A reader that stops reading must not make the backend buffer the stream."""
    b = c_backend("slow", extra_args=["--window", "65535"])
    s = stub(b)
    call = s.ServerStream(req(response_size=64 * 1024, response_count=4000), timeout=20)  # 256 MB
    for _ in range(3):
        next(call)
    time.sleep(0.5)

    def rss_kb():
        with open("/proc/%d/status" % b.pid) as f:
            return int([ln for ln in f if ln.startswith("VmRSS:")][0].split()[1])

    assert rss_kb() < 60 * 1024
    n = 3
    for r in call:  # drain the rest: everything still arrives in order
        assert r.seq == n
        n += 1
    assert n == 4000
    assert rss_kb() < 80 * 1024


def test_many_concurrent_calls_one_channel(backend):
    s = stub(backend)
    futs = [s.Unary.future(req(payload=b"%d" % i, delay_ms=20), timeout=10) for i in range(200)]
    assert [f.result().payload for f in futs] == [b"%d" % i for i in range(200)]


def health_watch(b, timeout=10):
    h = peers.health_stub(b.addr)
    return h, h.Watch(peers.health_pb2.HealthCheckRequest(service=""), timeout=timeout)


@pytest.mark.parametrize("kind", BOTH)
def test_health_check_watch_and_signals(kind):
    start = peers.start_c_backend if kind == "c" else peers.start_py_backend
    b = start("h1", extra_args=["--health", "NOT_SERVING"])
    HC = peers.health_pb2.HealthCheckResponse
    h, watch = health_watch(b)
    check = lambda: h.Check(peers.health_pb2.HealthCheckRequest(service="sidelb.test.Echo"), timeout=5).status
    assert check() == HC.NOT_SERVING
    assert next(watch).status == HC.NOT_SERVING
    b.set_health(True)
    assert next(watch).status == HC.SERVING
    assert check() == HC.SERVING
    b.set_health(False)
    assert next(watch).status == HC.NOT_SERVING
    assert check() == HC.NOT_SERVING
    b.set_health(False)  # no change, no update
    b.set_health(True)
    assert next(watch).status == HC.SERVING
    watch.cancel()


@pytest.mark.parametrize("kind", BOTH)
def test_health_unimplemented_watch(kind):
    start = peers.start_c_backend if kind == "c" else peers.start_py_backend
    b = start("h2", extra_args=["--health-unimplemented-watch"])
    h, watch = health_watch(b)
    with pytest.raises(grpc.RpcError) as ei:
        next(watch)
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert h.Check(peers.health_pb2.HealthCheckRequest(), timeout=5).status == \
        peers.health_pb2.HealthCheckResponse.SERVING


def test_goaway_after(c_backend):
    b = c_backend("g1", extra_args=["--goaway-after", "3"])
    s = stub(b)
    for i in range(10):  # one channel: the client reconnects after each GOAWAY
        assert s.Unary(req(payload=b"%d" % i), timeout=5).payload == b"%d" % i
    st = b.wait_stats(lambda st: st["calls"] == 10 and st["active"] == 0)
    assert st["connections"] >= 4 and st["ok"] == 10
    # in-flight calls finish after the GOAWAY (graceful)
    futs = [s.Unary.future(req(delay_ms=200), timeout=5) for _ in range(3)]
    assert all(f.result().backend_id == "g1" for f in futs)


def test_sigterm_writes_stats_and_exits(c_backend):
    b = c_backend("t1")
    stub(b).Unary(req(), timeout=5)
    assert b.stop(timeout=3) == 0
    assert b.stats()["calls"] == 1 and b.stats()["ok"] == 1


def test_restart_same_port(c_backend):
    b = c_backend("r1")
    port = b.port
    b.kill9()
    b.restart()
    assert b.port == port
    assert stub(b).Unary(req(), timeout=5).backend_id == "r1"


def test_echo_client_cli(shared):
    import subprocess
    out = subprocess.run([peers.PYTHON, os.path.join(peers.HERE, "echo_client.py"), "--target", shared["c"].addr,
                          "--calls", "5", "--method", "Bidi", "--count", "3"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:5] == ["%d c1" % i for i in range(5)]
    assert lines[5:] == ["backend c1 5", "errors 0"]


def test_c_backend_without_stats_file(c_backend):
    b = c_backend("ns", stats=False)
    assert stub(b).Unary(req(), timeout=5).backend_id == "ns"
    assert b.stats() == {}


def frames(msgs):
    return b"".join(b"\x00" + len(m).to_bytes(4, "big") + m for m in msgs)


def unframe(data):
    out = []
    while data:
        n = int.from_bytes(data[1:5], "big")
        out.append(data[5:5 + n])
        data = data[5 + n:]
    return out


@pytest.mark.skipif(not os.path.exists("/usr/bin/nghttp"), reason="nghttp2-client not installed")
def test_several_messages_in_one_data_frame(c_backend, tmp_path):
    """nghttp sends the whole body in one DATA frame: three messages, three replies."""
    import subprocess
    b = c_backend("raw")
    body = tmp_path / "body"
    body.write_bytes(frames([req(payload=p).SerializeToString() for p in (b"a", b"bb", b"ccc")]))
    out = subprocess.run(["nghttp", "-d", str(body), "-H", "content-type: application/grpc", "-H", "te: trailers",
                          "http://%s/sidelb.test.Echo/Bidi" % b.addr], capture_output=True, timeout=10)
    assert out.returncode == 0, out.stderr
    replies = [peers.echo_pb2.EchoReply.FromString(m) for m in unframe(out.stdout)]
    assert [(r.payload, r.seq, r.received) for r in replies] == [(b"a", 0, 1), (b"bb", 1, 2), (b"ccc", 2, 3)]
