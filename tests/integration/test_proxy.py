"""The forwarding core, end to end: python3-grpcio clients -> sidelb -> real
gRPC backends (our C test backend and the grpcio echo server)."""

import collections
import queue
import signal
import socket
import subprocess
import time

import grpc
import pytest

import peers
from peers import req
from sidelb_harness import rss_kb, simple_config, start_sidelb


def three_backends(start=peers.start_c_backend):
    return [start("b%d" % i) for i in range(3)]


@pytest.fixture
def proxy3():
    bes = three_backends()
    slb = start_sidelb(simple_config([b.addr for b in bes]))
    return slb, bes


def test_unary_through_sidelb(proxy3):
    slb, bes = proxy3
    r = peers.echo_stub(slb.addr).Unary(req(payload=b"hello"), timeout=5)
    assert r.payload == b"hello"
    assert r.backend_id in {b.id for b in bes}


def test_300_calls_on_one_channel_are_exactly_100_each(proxy3):
    slb, bes = proxy3
    stub = peers.echo_stub(slb.addr)
    counts = collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(300))
    assert counts == {"b0": 100, "b1": 100, "b2": 100}


def test_streaming_kinds(proxy3):
    slb, _ = proxy3
    stub = peers.echo_stub(slb.addr)
    replies = list(stub.ServerStream(req(payload=b"s", response_count=50), timeout=5))
    assert [r.seq for r in replies] == list(range(50))
    assert len({r.backend_id for r in replies}) == 1
    r = stub.ClientStream(iter([req(payload=b"c%d" % i) for i in range(20)]), timeout=5)
    assert r.received == 20
    replies = list(stub.Bidi(iter([req(payload=b"b%d" % i) for i in range(30)]), timeout=5))
    assert [r.payload for r in replies] == [b"b%d" % i for i in range(30)]


def test_bidi_is_interactive(proxy3):
    """Each reply comes back before the next request is sent: nothing waits for END_STREAM."""
    slb, _ = proxy3
    stub = peers.echo_stub(slb.addr)
    import queue
    q = queue.Queue()

    def gen():
        for i in range(10):
            yield req(payload=b"%d" % i)
            assert q.get(timeout=5) == b"%d" % i

    for r in stub.Bidi(gen(), timeout=10):
        q.put(r.payload)


def test_4mib_messages_both_ways(proxy3):
    slb, _ = proxy3
    stub = peers.echo_stub(slb.addr)
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256)
    r = stub.Unary(req(payload=big), timeout=20)
    assert r.payload == big
    r = stub.Unary(req(payload=b"x", response_size=4 * 1024 * 1024), timeout=20)
    assert len(r.payload) == 4 * 1024 * 1024
    replies = list(stub.Bidi(iter([req(payload=big)] * 3), timeout=30))
    assert [len(x.payload) for x in replies] == [len(big)] * 3


def test_metadata_and_trailers_both_ways(proxy3):
    slb, _ = proxy3
    stub = peers.echo_stub(slb.addr)
    binval = bytes([0, 1, 2, 255, 254, 10, 13])
    md = (("x-plain", "value 1"), ("x-data-bin", binval), ("x-multi", "a"))
    r, call = stub.Unary.with_call(req(payload=b"m"), metadata=md, timeout=5)
    initial = dict(call.initial_metadata())
    trailing = dict(call.trailing_metadata())
    assert initial["x-plain"] == "value 1"
    assert initial["x-data-bin"] == binval
    assert trailing["x-trailer-x-plain"] == "value 1"
    assert trailing["x-trailer-x-data-bin"] == binval


@pytest.mark.parametrize("code", range(1, 17))
def test_every_status_code_with_message(proxy3, code):
    slb, _ = proxy3
    stub = peers.echo_stub(slb.addr)
    msg = "failure %d: ünïcødé ✓ 100%% done" % code
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x", status_code=code, status_message=msg), timeout=5)
    assert e.value.code() == peers.GRPC_CODES[code]
    assert e.value.details() == msg


def test_status_from_python_backend():
    """An independent gRPC implementation as the backend."""
    bes = three_backends(peers.start_py_backend)
    slb = start_sidelb(simple_config([b.addr for b in bes]))
    stub = peers.echo_stub(slb.addr)
    counts = collections.Counter(stub.Unary(req(payload=b"p"), timeout=5).backend_id for _ in range(30))
    assert counts == {"b0": 10, "b1": 10, "b2": 10}
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(status_code=5, status_message="nicht gefunden ✗"), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and e.value.details() == "nicht gefunden ✗"
    replies = list(stub.Bidi(iter([req(payload=b"%d" % i) for i in range(10)]), timeout=5))
    assert len(replies) == 10


def test_deadline_exceeded(proxy3):
    slb, bes = proxy3
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"slow", delay_ms=3000), timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2
    # the cancel reaches the backend
    end = time.monotonic() + 3
    while sum(b.stats().get("cancelled", 0) for b in bes) < 1:
        assert time.monotonic() < end, "no backend saw the cancel"
        time.sleep(0.02)


def test_client_cancel_reaches_backend():
    be = peers.start_c_backend("only")
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    fut = stub.Unary.future(req(payload=b"x", delay_ms=5000), timeout=10)
    time.sleep(0.5)  # the call reaches the backend (its stats are written when calls end)
    fut.cancel()
    assert be.wait_stats(lambda s: s.get("cancelled", 0) == 1, timeout=3)
    # a streaming call cancelled mid-way (the client has not half-closed)
    import queue
    q = queue.Queue()
    it = stub.Bidi(iter(q.get, None), timeout=10)
    q.put(req(payload=b"y"))
    assert next(it).payload == b"y"
    it.cancel()
    assert be.wait_stats(lambda s: s.get("cancelled", 0) == 2, timeout=3)


def test_backend_killed_mid_stream_is_unavailable():
    be = peers.start_c_backend("victim")
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    # A Bidi call the app keeps open (a server stream would finish before the kill:
    # the test backend paces only its first reply): one reply per request.
    requests = queue.Queue()
    it = stub.Bidi(iter(requests.get, None), timeout=20)
    requests.put(req(payload=b"z"))
    next(it)
    be.kill9()
    with pytest.raises(grpc.RpcError) as e:
        for _ in it:
            requests.put(req(payload=b"z"))
    requests.put(None)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert slb.alive()


def test_no_route_is_unimplemented(proxy3):
    slb, _ = proxy3
    ch = peers.channel(slb.addr)
    call = ch.unary_unary("/other.Service/Method")
    with pytest.raises(grpc.RpcError) as e:
        call(b"", timeout=5)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "no route" in e.value.details()


@pytest.mark.serial  # UNAVAILABLE within 1 s
def test_no_reachable_backend_is_unavailable():
    dead = [("127.0.0.1:%d" % peers.free_port()) for _ in range(2)]
    slb = start_sidelb(simple_config(dead, connect_timeout_ms=1000, wait_for_ready_ms=0))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=5)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "sidelb" in e.value.details()
    assert time.monotonic() - t0 < 1


def test_all_backends_down_calls_wait_and_succeed_when_one_returns():
    be = peers.start_c_backend("phoenix")
    slb = start_sidelb(simple_config([be.addr], wait_for_ready_ms=5000,
                                     backoff={"initial_ms": 100, "max_ms": 200}))
    stub = peers.echo_stub(slb.addr)
    assert stub.Unary(req(payload=b"1"), timeout=5).payload == b"1"
    be.kill9()
    fut = stub.Unary.future(req(payload=b"2"), timeout=8)
    time.sleep(1.0)
    assert not fut.done()
    be.restart()
    assert fut.result().payload == b"2"


def test_waiting_call_is_bounded_by_its_deadline():
    dead = "127.0.0.1:%d" % peers.free_port()
    slb = start_sidelb(simple_config([dead], wait_for_ready_ms=10000))
    stub = peers.echo_stub(slb.addr)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as e:
        stub.Unary(req(payload=b"x"), timeout=0.5)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 2
    assert slb.alive()


def test_dead_backend_is_skipped():
    """One backend down: calls go to the others, none fails."""
    bes = [peers.start_c_backend("up%d" % i) for i in range(2)]
    dead = "127.0.0.1:%d" % peers.free_port()
    slb = start_sidelb(simple_config([bes[0].addr, dead, bes[1].addr]))
    stub = peers.echo_stub(slb.addr)
    counts = collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(60))
    assert set(counts) == {"up0", "up1"} and sum(counts.values()) == 60


def test_backend_goaway_moves_calls_to_a_new_connection():
    be = peers.start_c_backend("ga", extra_args=["--goaway-after", "5"])
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    for i in range(40):
        assert stub.Unary(req(payload=b"%d" % i), timeout=5).payload == b"%d" % i
    assert be.stats()["connections"] >= 8


def test_concurrent_calls_open_more_connections_at_stream_limit():
    be = peers.start_c_backend("lim", extra_args=["--max-concurrent-streams", "4"])
    slb = start_sidelb(simple_config([be.addr], max_connections_per_backend=8))
    stub = peers.echo_stub(slb.addr)
    futs = [stub.Unary.future(req(payload=b"c", delay_ms=300), timeout=10) for _ in range(16)]
    assert all(f.result().payload == b"c" for f in futs)
    assert be.stats()["connections"] >= 4


def test_http1_request_gets_a_clear_refusal(proxy3):
    slb, _ = proxy3
    s = socket.create_connection(("127.0.0.1", slb.port), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 505")
    assert b"HTTP/2" in data
    # sidelb is still fine
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"ok"), timeout=5).payload == b"ok"


def test_garbage_after_preface_does_not_hurt(proxy3):
    slb, _ = proxy3
    s = socket.create_connection(("127.0.0.1", slb.port), timeout=5)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100)
    s.settimeout(5)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"ok"), timeout=5).payload == b"ok"


@pytest.mark.timeout(90)
def test_slow_reader_keeps_sidelb_memory_bounded():
    """A backend streams as fast as it can; the client reads slowly. With
    end-to-end flow control sidelb holds about one window, not the stream."""
    be = peers.start_c_backend("fast")
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    base = rss_kb(slb.pid)
    # 2000 replies x 64 KiB = 128 MiB offered
    it = stub.ServerStream(req(payload=b"x", response_size=64 * 1024, response_count=2000), timeout=80)
    peak = 0
    got = 0
    for r in it:
        got += 1
        if got % 10 == 0:
            time.sleep(0.05)
            peak = max(peak, rss_kb(slb.pid))
        if got == 300:
            break
    it.cancel()
    assert got == 300
    assert peak - base < 24 * 1024, "sidelb grew by %d KiB while a slow reader drained" % (peak - base)
    assert slb.alive()


@pytest.mark.timeout(60)
def test_slow_backend_reader_keeps_sidelb_memory_bounded():
    """The client uploads fast, the backend is slow to read: memory still bounded."""
    be = peers.start_c_backend("slowread", extra_args=["--window", "65535"])
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    base = rss_kb(slb.pid)
    chunk = b"u" * (256 * 1024)
    sent = [0]

    def gen():
        for _ in range(200):
            sent[0] += 1
            yield req(payload=chunk, delay_ms=0)

    r = stub.ClientStream(gen(), timeout=50)
    assert r.received == 200
    assert rss_kb(slb.pid) - base < 24 * 1024


def test_check_config_exit_codes(tmp_path):
    good = tmp_path / "good.json"
    import json
    good.write_text(json.dumps(simple_config(["127.0.0.1:1"])))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(good)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "listeners": [],\n  "clusters": [], "bogus": 1\n}\n')
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode == 1
    assert str(bad) in r.stderr and ":" in r.stderr


def test_sigterm_drains_in_flight_calls():
    be = peers.start_c_backend("drain")
    slb = start_sidelb(simple_config([be.addr]))
    stub = peers.echo_stub(slb.addr)
    fut = stub.Unary.future(req(payload=b"late", delay_ms=800), timeout=10)
    time.sleep(0.3)
    slb.signal(signal.SIGTERM)
    assert fut.result().payload == b"late"
    assert slb.wait(timeout=5) == 0


def test_many_parallel_calls_no_loss(proxy3):
    slb, bes = proxy3
    stub = peers.echo_stub(slb.addr)
    futs = [stub.Unary.future(req(payload=b"%d" % i), timeout=20) for i in range(500)]
    assert [f.result().payload for f in futs] == [b"%d" % i for i in range(500)]


@pytest.mark.serial  # 10 calls within 2 s past a 300 ms connect timeout
def test_blackholed_backend_calls_move_on_after_connect_timeout():
    """A backend whose connect hangs: calls waiting for it go elsewhere after
    connect_timeout_ms, later calls skip it (TRANSIENT_FAILURE)."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex(("127.0.0.1", port))
        fillers.append(f)
    time.sleep(0.2)
    try:
        good = peers.start_c_backend("good")
        slb = start_sidelb(simple_config(["127.0.0.1:%d" % port, good.addr], connect_timeout_ms=300))
        stub = peers.echo_stub(slb.addr)
        t0 = time.monotonic()
        ids = [stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(10)]
        assert ids == ["good"] * 10
        assert time.monotonic() - t0 < 2.0
        assert "not connected after 300 ms" in slb.log()
    finally:
        for f in fillers:
            f.close()
        hole.close()
