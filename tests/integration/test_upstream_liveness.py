"""Backend connections: sidelb sends no call before the backend's SETTINGS
(its stream limit) arrived, and a backend that never completes the HTTP/2
handshake is a connect failure, not a place where calls hang."""

import socket
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


class LateSettingsBackend(peers.RawServer):
    """A raw h2c server that sends its SETTINGS (MAX_CONCURRENT_STREAMS 1)
    only `delay` seconds after accepting, records whether request bytes came
    before that, and answers every request with an empty OK reply."""

    def __init__(self, delay=0.5, never=False, blackhole=False):
        self.delay, self.never, self.blackhole = delay, never, blackhole
        self.early_requests = 0
        self.requests = 0
        self.max_open = 0
        super().__init__()

    def serve(self, c):
        early = b""
        c.settimeout(0.05)
        until = time.monotonic() + (30 if self.never else self.delay)
        while time.monotonic() < until and not self.stopped:
            try:
                data = c.recv(65536)
                if not data:
                    return
                early += data
            except socket.timeout:
                pass
            except OSError:
                return
        if self.never or self.stopped:
            return
        c.settimeout(None)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1})
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        try:
            for ev in conn.receive_data(early):
                if isinstance(ev, h2.events.RequestReceived):
                    self.early_requests += 1  # a request sent before our SETTINGS
            c.sendall(conn.data_to_send())
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self.requests += 1
                        if self.blackhole:  # the host vanishes: nothing is read or answered any more
                            while not self.stopped:
                                time.sleep(0.05)
                            return
                        self.max_open = max(self.max_open, len(conn.streams))
                        sid = ev.stream_id
                        conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
                        conn.send_data(sid, b"\x00\x00\x00\x00\x00")
                        conn.send_headers(sid, [(b"grpc-status", b"0")], end_stream=True)
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return


@pytest.mark.timeout(30)
def test_calls_wait_for_the_backends_settings():
    be = LateSettingsBackend(delay=0.5)
    try:
        slb = start_sidelb(simple_config([be.addr]))
        stub = peers.echo_stub(slb.addr)
        futs = [stub.Unary.future(req(payload=b"x"), timeout=10) for _ in range(3)]
        for f in futs:
            f.result()
        assert be.early_requests == 0, "sidelb sent %d requests before the backend's SETTINGS" % be.early_requests
        assert be.requests == 3
        assert be.max_open == 1, "the backend's MAX_CONCURRENT_STREAMS 1 was not honoured"
    finally:
        be.close()


@pytest.mark.timeout(30)
def test_backend_that_never_sends_settings_fails_calls_cleanly():
    be = LateSettingsBackend(never=True)
    try:
        cfg = simple_config([be.addr], wait_for_ready_ms=0, connect_timeout_ms=300,
                            backoff={"initial_ms": 200, "max_ms": 500, "min_connect_timeout_ms": 300})
        slb = start_sidelb(cfg)
        stub = peers.echo_stub(slb.addr)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            stub.Unary(req(payload=b"x"), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert time.monotonic() - t0 < 3, "the call waited for a handshake that never came"
        assert slb.alive()
    finally:
        be.close()


@pytest.mark.timeout(30)
def test_unanswered_ping_closes_a_blackholed_connection():
    be = LateSettingsBackend(delay=0, blackhole=True)
    try:
        cfg = simple_config([be.addr], wait_for_ready_ms=0, keepalive_ms=300, keepalive_timeout_ms=300)
        slb = start_sidelb(cfg)
        stub = peers.echo_stub(slb.addr)
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            stub.Unary(req(payload=b"x"))  # no deadline: only the keepalive can end it
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        assert time.monotonic() - t0 < 5
        assert "PING unanswered" in slb.log()
        assert slb.alive()
    finally:
        be.close()
