"""Backends that misbehave at the HTTP/2 level (a raw python3-h2 server that
breaks the protocol on purpose): the app always gets a proper gRPC status,
sidelb never crashes, and calls to good backends keep working."""

import struct
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


class BadBackend(peers.RawServer):
    """Accepts h2c connections and answers every request according to `mode`."""

    def __init__(self, mode):
        self.mode = mode
        super().__init__()

    def serve(self, c):
        mode = self.mode
        if mode == "garbage":
            c.recv(65536)
            c.sendall(b"\x00\x00\x04\x07garbage that is not HTTP/2 at all" * 10)
            time.sleep(0.5)
            c.close()
            return
        if mode == "silent":  # accepts, never speaks: sidelb's deadline ends the call
            time.sleep(10)
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None,
                                                                    validate_outbound_headers=False,
                                                                    normalize_outbound_headers=False))
        conn.initiate_connection()
        c.sendall(conn.data_to_send())
        try:
            while True:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        self._answer(c, conn, ev.stream_id)
                out = conn.data_to_send()
                if out:
                    c.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            return

    def _answer(self, c, conn, sid):
        mode = self.mode
        if mode == "no_status":  # response HEADERS without :status
            conn.send_headers(sid, [(b"content-type", b"application/grpc")], end_stream=True)
        elif mode == "close_mid_response":  # headers and half a message, then the socket closes
            conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc")])
            conn.send_data(sid, b"\x00\x00\x00\x10\x00" + b"\x0a\x03abc")
            c.sendall(conn.data_to_send())
            c.close()
            raise OSError("closed on purpose")
        elif mode == "http_503":  # a plain HTTP error, not gRPC
            conn.send_headers(sid, [(b":status", b"503"), (b"content-type", b"text/plain")])
            conn.send_data(sid, b"service unavailable", end_stream=True)
        elif mode == "rst_internal":
            conn.reset_stream(sid, error_code=2)
        elif mode == "goaway_error":
            conn.close_connection(error_code=1)
        elif mode == "bad_frame":  # a DATA frame on stream 0 is a connection error
            c.sendall(conn.data_to_send() + struct.pack(">I", 5)[1:] + b"\x00\x00\x00\x00\x00hello")
        elif mode == "huge_header":  # a header value far beyond any sane size
            conn.send_headers(sid, [(b":status", b"200"), (b"content-type", b"application/grpc"),
                                    (b"x-huge", b"v" * 200000)], end_stream=True)


MODES = ["garbage", "no_status", "close_mid_response", "http_503", "rst_internal", "goaway_error", "bad_frame",
         "huge_header"]


@pytest.mark.parametrize("mode", MODES)
def test_misbehaving_backend_gives_a_grpc_status(mode):
    bad = BadBackend(mode)
    try:
        slb = start_sidelb(simple_config([bad.addr], wait_for_ready_ms=0))
        stub = peers.echo_stub(slb.addr)
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as e:
                stub.Unary(req(payload=b"x"), timeout=20)  # the raw backend takes seconds to encode huge_header
            assert e.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the call hung"
            assert e.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                      grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                      grpc.StatusCode.CANCELLED), e.value
        assert slb.alive()
    finally:
        bad.close()


def test_silent_backend_is_bounded_by_the_deadline():
    bad = BadBackend("silent")
    try:
        slb = start_sidelb(simple_config([bad.addr], connect_timeout_ms=500, wait_for_ready_ms=0))
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as e:
            peers.echo_stub(slb.addr).Unary(req(payload=b"x"), timeout=1)
        assert e.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - t0 < 3
        assert slb.alive()
    finally:
        bad.close()


def test_bad_backends_do_not_hurt_calls_to_good_ones():
    bads = [BadBackend(m) for m in ("garbage", "bad_frame", "rst_internal")]
    good = peers.start_c_backend("good")
    try:
        retry = {"methodConfig": [{"name": [{"service": "sidelb.test.Echo"}],
                                   "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.01s",
                                                   "maxBackoff": "0.05s", "backoffMultiplier": 2,
                                                   "retryableStatusCodes": ["UNAVAILABLE", "INTERNAL"]}}]}
        slb = start_sidelb(simple_config([b.addr for b in bads] + [good.addr], service_config=retry,
                                         outlier_detection={"consecutive_failures": 2, "base_ejection_ms": 5000,
                                                            "max_ejection_percent": 75}))
        stub = peers.echo_stub(slb.addr)
        ok = sum(stub.Unary(req(payload=b"x"), timeout=5).backend_id == "good" for _ in range(40))
        assert ok == 40
        assert slb.alive()
    finally:
        for b in bads:
            b.close()
