"""One app cannot hurt another: an app that stops reading its responses
holds only its own streams' windows; other apps' calls on the same backend
connection keep flowing."""

import os
import select
import socket
import struct
import threading
import time
import urllib.request

import grpc
import h2.events
import h2.exceptions
import h2.config
import h2.connection
import pytest

import peers
from peers import req
from sidelb_harness import rss_kb, simple_config, start_sidelb

pytestmark = pytest.mark.serial  # a stalled reader, a rapid-reset flood, a good app at p99 < 100 ms (conftest.py)

SANITIZER = os.environ.get("SIDELB_SANITIZER") == "1"


def grpc_frame(msg):
    body = msg.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


class StalledReader:
    """A raw h2c app that opens `n` server-streaming calls with large replies
    and then never reads its socket again (no WINDOW_UPDATE, no bytes taken)."""

    def __init__(self, port, n, response_size, response_count):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        body = grpc_frame(req(payload=b"s", response_size=response_size, response_count=response_count))
        for _ in range(n):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                    (b":path", b"/sidelb.test.Echo/ServerStream"), (b":authority", b"sidelb"),
                                    (b"content-type", b"application/grpc"), (b"te", b"trailers")])
            conn.send_data(sid, body, end_stream=True)
        self.sock.sendall(conn.data_to_send())

    def close(self):
        self.sock.close()


@pytest.mark.timeout(90)
def test_stalled_reader_holds_only_its_own_streams():
    be = peers.start_c_backend("iso", extra_args=["--max-concurrent-streams", "1000"])
    cfg = simple_config([be.addr], max_connections_per_backend=1)
    cfg["listeners"][0]["max_concurrent_streams"] = 1000
    slb = start_sidelb(cfg)
    good = peers.echo_stub(slb.addr)
    assert good.Unary(req(payload=b"warm"), timeout=5).payload == b"warm"  # one upstream connection is up
    rss0 = rss_kb(slb.pid)

    # 100 streams x 4 MiB of replies each, never read: far more than the
    # upstream connection's 16 MiB window if that window waited for the app
    slow = StalledReader(slb.port, n=100, response_size=65536, response_count=64)
    try:
        # let sidelb take in what the windows allow
        deadline = time.monotonic() + 10
        while be.stats_now()["active"] < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        lat, errors = [], []
        for i in range(100):
            t0 = time.monotonic()
            try:
                assert good.Unary(req(payload=b"%d" % i), timeout=2).payload == b"%d" % i
                lat.append(time.monotonic() - t0)
            except grpc.RpcError as e:
                errors.append(e.code())
                if len(errors) >= 5:
                    break
            time.sleep(0.01)
        lat.sort()
        assert not errors, "the well-behaved app failed calls: %s" % errors
        p99 = lat[int(len(lat) * 0.99) - 1]
        assert p99 < (0.5 if SANITIZER else 0.1), "p99 %.0f ms" % (p99 * 1000)
        # what sidelb holds for the stalled app is bounded by its streams' windows
        grown = rss_kb(slb.pid) - rss0
        assert grown < 100 * 1024, "sidelb grew %d KiB" % grown
    finally:
        slow.close()
    assert slb.alive()
    assert good.Unary(req(payload=b"after"), timeout=5).payload == b"after"


def rapid_reset(port, seconds, result):
    """HEADERS then RST_STREAM in a loop on one connection (CVE-2023-44487),
    until sidelb closes it or time is up; result gets the GOAWAY error code."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    end = time.monotonic() + seconds
    result["opened"] = 0
    try:
        while time.monotonic() < end and "goaway" not in result:
            for _ in range(50):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                        (b":path", b"/sidelb.test.Echo/Unary"), (b":authority", b"sidelb"),
                                        (b"content-type", b"application/grpc"), (b"te", b"trailers")])
                conn.reset_stream(sid, error_code=8)
                result["opened"] += 1
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                pass  # closed on us: read what it said
            while select.select([sock], [], [], 0)[0]:
                data = sock.recv(65536)
                if not data:
                    result.setdefault("closed", True)
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        result["goaway"] = ev.error_code
    except (OSError, h2.exceptions.ProtocolError) as e:
        result.setdefault("closed", repr(e))
    finally:
        sock.close()


@pytest.mark.timeout(60)
def test_rapid_reset_costs_only_the_attacking_connection():
    be = peers.start_c_backend("rr")
    cfg = simple_config([be.addr])
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    good = peers.echo_stub(slb.addr)
    assert good.Unary(req(payload=b"warm"), timeout=5).payload == b"warm"
    result = {}
    attacker = threading.Thread(target=rapid_reset, args=(slb.port, 10, result), daemon=True)
    attacker.start()
    lat, errors = [], []
    while attacker.is_alive() and len(lat) + len(errors) < 300:
        t0 = time.monotonic()
        try:
            good.Unary(req(payload=b"x"), timeout=2)
            lat.append(time.monotonic() - t0)
        except grpc.RpcError as e:
            errors.append(e.code())
        time.sleep(0.005)
    attacker.join(15)
    assert result.get("goaway") == 11, "expected GOAWAY(ENHANCE_YOUR_CALM), got %r" % result  # ENHANCE_YOUR_CALM
    assert result["opened"] < 2000, "the attacker opened %d streams before being cut off" % result["opened"]
    assert len(errors) <= max(1, len(lat) // 100), "the well-behaved app failed %d calls" % len(errors)
    assert "rapid reset" in slb.log()
    assert slb.alive()
    assert good.Unary(req(payload=b"after"), timeout=5).payload == b"after"
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()
    assert "sidelb_downstream_rapid_reset_closes_total 1" in metrics
