"""HTTP/2-level behaviour through sidelb, seen by a raw HTTP/2 client
(python3-h2): exact frames and codes that gRPC libraries hide."""

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb


class RawClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.flush()
        self.events = []

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, body=None, end=True, extra=()):
        sid = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
                   (b":authority", b"sidelb"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]
        headers += list(extra)
        self.conn.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def pump(self, until, timeout=5.0):
        end = time.monotonic() + timeout
        while not until(self.events):
            self.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("timed out; events: %r" % self.events)
            if not data:
                break
            for ev in self.conn.receive_data(data):
                self.events.append(ev)
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self.flush()
        return self.events

    def of(self, kind, sid=None):
        return [e for e in self.events if isinstance(e, kind) and (sid is None or getattr(e, "stream_id", None) == sid)]


def grpc_frame(msg):
    body = msg.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


def test_rst_no_error_after_complete_response_stays_no_error():
    """The backend answers and ends the call while the client is still
    sending, then resets with NO_ERROR: the client gets the full response and
    the reset as NO_ERROR, not CANCEL."""
    be = peers.start_c_backend("rst")
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    sid = c.request("/sidelb.test.Echo/Bidi", grpc_frame(req(payload=b"x", status_code=9, status_message="stop")),
                    end=False)
    c.pump(lambda evs: any(isinstance(e, h2.events.StreamReset) for e in evs))
    trailers = c.of(h2.events.TrailersReceived, sid) or c.of(h2.events.ResponseReceived, sid)
    hdrs = dict(trailers[-1].headers)
    assert hdrs[b"grpc-status"] == b"9" and hdrs[b"grpc-message"] == b"stop"
    resets = c.of(h2.events.StreamReset, sid)
    assert resets[0].error_code == 0, "RST_STREAM code %r" % resets[0].error_code


def test_sidelb_error_is_trailers_only_with_percent_encoded_message():
    slb = start_sidelb(simple_config(["127.0.0.1:1"]))
    c = RawClient(slb.port)
    sid = c.request("/no.Such/Thing", grpc_frame(req(payload=b"x")))
    c.pump(lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs))
    resp = c.of(h2.events.ResponseReceived, sid)[0]
    hdrs = dict(resp.headers)
    assert resp.stream_ended is not None  # HEADERS carried END_STREAM: trailers-only
    assert hdrs[b":status"] == b"200"
    assert hdrs[b"content-type"] == b"application/grpc"
    assert hdrs[b"grpc-status"] == b"12"
    assert b"no route" in hdrs[b"grpc-message"]
    assert not c.of(h2.events.DataReceived, sid)


def test_client_rst_reaches_backend_as_a_cancel():
    be = peers.start_c_backend("cx")
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    sid = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x", delay_ms=3000)))
    time.sleep(0.3)
    c.conn.reset_stream(sid, error_code=8)
    c.flush()
    assert be.wait_stats(lambda s: s.get("cancelled", 0) == 1, timeout=3)


def test_te_and_grpc_timeout_and_binary_headers_pass_unchanged():
    be = peers.start_c_backend("hdr")
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    binval = b"AAEC/w"  # base64 of 00 01 02 ff, as -bin headers travel
    sid = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x")),
                    extra=[(b"grpc-timeout", b"5S"), (b"x-k-bin", binval), (b"x-plain", b"v")])
    c.pump(lambda evs: any(isinstance(e, h2.events.StreamEnded) for e in evs))
    resp = dict(c.of(h2.events.ResponseReceived, sid)[0].headers)
    assert resp[b"x-k-bin"] == binval and resp[b"x-plain"] == b"v"
    trailers = dict(c.of(h2.events.TrailersReceived, sid)[0].headers)
    assert trailers[b"grpc-status"] == b"0"
    assert trailers[b"x-trailer-x-k-bin"] == binval


def test_many_streams_on_one_connection_are_balanced_per_call():
    bes = [peers.start_c_backend("s%d" % i) for i in range(3)]
    slb = start_sidelb(simple_config([b.addr for b in bes]))
    c = RawClient(slb.port)
    sids = [c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x"))) for _ in range(30)]
    c.pump(lambda evs: sum(isinstance(e, h2.events.StreamEnded) for e in evs) == 30)
    assert sorted(b.stats()["calls"] for b in bes) == [10, 10, 10]


def raw_data_frame(sid, payload, end=False):
    return struct.pack(">I", len(payload))[1:] + bytes([0, 1 if end else 0]) + struct.pack(">I", sid) + payload


def test_client_over_its_flow_control_window_is_cut_off_alone():
    be = peers.start_c_backend("fc", extra_args=["--window", "65535"])
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    sid = c.request("/sidelb.test.Echo/ClientStream", None, end=False)
    c.pump(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    # 512 KiB of DATA with no WINDOW_UPDATE from sidelb: far past the 256 KiB window
    blob = b"".join(raw_data_frame(sid, b"z" * 16384) for _ in range(32))
    try:
        c.sock.sendall(blob)
    except OSError:
        pass
    closed = False
    try:
        c.sock.settimeout(5)
        while c.sock.recv(65536):
            pass
        closed = True
    except OSError:
        closed = True
    assert closed
    assert "FLOW_CONTROL" in slb.log() or slb.alive()
    # everyone else is fine
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"ok"), timeout=5).payload == b"ok"
    assert slb.alive()


def test_streams_beyond_max_concurrent_streams_are_refused():
    be = peers.start_c_backend("mcs")
    cfg = simple_config([be.addr])
    cfg["listeners"][0]["max_concurrent_streams"] = 4
    slb = start_sidelb(cfg)
    c = RawClient(slb.port)
    # six streams before sidelb's SETTINGS arrive: the client does not know the limit yet
    sids = [c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x", delay_ms=300))) for _ in range(6)]
    c.pump(lambda evs: sum(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in evs) == 6)
    refused = [e.stream_id for e in c.of(h2.events.StreamReset) if e.error_code == 7]  # REFUSED_STREAM
    ended = [e.stream_id for e in c.of(h2.events.StreamEnded)]
    assert len(refused) == 2 and len(ended) == 4, (refused, ended)
    assert be.stats()["calls"] == 4  # refused streams never reached the backend
    assert slb.alive()


def test_too_many_headers_get_a_reset_not_a_crash():
    be = peers.start_c_backend("hdrs")
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    many = [(b"x-h%d" % i, b"v") for i in range(400)]
    sid = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x")), extra=many)
    c.pump(lambda evs: any(isinstance(e, (h2.events.StreamReset, h2.events.StreamEnded)) for e in evs))
    assert c.of(h2.events.StreamReset, sid) or dict(c.of(h2.events.ResponseReceived, sid)[0].headers).get(
        b"grpc-status") not in (None, b"0")
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"ok"), timeout=5).payload == b"ok"
    assert slb.alive()
