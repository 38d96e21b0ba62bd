"""One app cannot hurt another: an app that stops reading its responses
holds only its own streams' windows; other apps' calls on the same backend
connection keep flowing."""

import os
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import pytest

import peers
from peers import req
from sidelb_harness import rss_kb, simple_config, start_sidelb

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
        while be.stats()["active"] < 100 and time.monotonic() < deadline:
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
