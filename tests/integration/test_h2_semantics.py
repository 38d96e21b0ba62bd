"""HTTP/2-level behaviour through sidelb, seen by a raw HTTP/2 client
(python3-h2): exact frames and codes that gRPC libraries hide."""

import os
import socket
import struct
import threading
import time
import urllib.request

import grpc
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb

SANITIZER = os.environ.get("SIDELB_SANITIZER") == "1"


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


class GoodApp(threading.Thread):
    """A well-behaved grpcio app on its own connection: unary calls at ~100/s
    until stopped, measured (issue 9, item 7)."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.stub = peers.echo_stub(addr)
        self.halt = threading.Event()
        self.lat, self.errors = [], []

    def run(self):
        while not self.halt.is_set():
            t0 = time.monotonic()
            try:
                self.stub.Unary(req(payload=b"good"), timeout=2)
                self.lat.append(time.monotonic() - t0)
            except grpc.RpcError as e:
                self.errors.append(e.code())
            time.sleep(0.01)

    def finish(self):
        self.halt.set()
        self.join(10)
        n = len(self.lat) + len(self.errors)
        assert n >= 50, "the well-behaved app made only %d calls" % n
        assert len(self.lat) >= 0.99 * n, "the well-behaved app failed %d of %d calls: %s" % (
            len(self.errors), n, self.errors[:5])
        lat = sorted(self.lat)
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)]
        print("well-behaved app: %d calls, %d failed, p99 %.1f ms" % (n, len(self.errors), p99 * 1000))
        assert p99 < (0.5 if SANITIZER else 0.1), "p99 %.0f ms" % (p99 * 1000)


def grpc_status(c, sid):
    """grpc-status of a finished stream (trailers, or a trailers-only response)."""
    for e in c.of(h2.events.TrailersReceived, sid) + c.of(h2.events.ResponseReceived, sid):
        h = dict(e.headers)
        if b"grpc-status" in h:
            return int(h[b"grpc-status"]), h.get(b"grpc-message", b"")
    return None, None


def request_headers(sid_path, extra=()):
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":path", sid_path.encode()), (b":authority", b"sidelb"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers")] + list(extra)


@pytest.mark.serial  # a good app's p99 < 100 ms beside 200 streams
@pytest.mark.timeout(90)
@pytest.mark.parametrize("configured", [None, 100], ids=["default", "explicit"])
def test_streams_past_max_concurrent_streams_are_refused_one_by_one(configured):
    """100 streams held open, then 100 more from a client that ignores the
    limit: the extra ones get RST_STREAM(REFUSED_STREAM), the first 100 end
    OK, the connection stays usable, and another app does not notice."""
    be = peers.start_c_backend("mcs100", extra_args=["--max-concurrent-streams", "1000"])
    cfg = simple_config([be.addr])
    if configured is not None:
        cfg["listeners"][0]["max_concurrent_streams"] = configured
    admin_port = peers.free_port()
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    good = GoodApp(slb.addr)
    good.start()

    c = RawClient(slb.port)
    c.pump(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    assert c.conn.remote_settings.max_concurrent_streams == 100  # what sidelb advertised
    # from here the client ignores the limit (python-h2 would refuse to open stream 101)
    c.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = 2 ** 31 - 1
    c.conn.remote_settings.acknowledge()

    slow = grpc_frame(req(payload=b"s", delay_ms=3000, response_count=1))  # one reply after 3 s
    first = []
    for _ in range(100):
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, request_headers("/sidelb.test.Echo/ServerStream"))
        c.conn.send_data(sid, slow, end_stream=True)
        first.append(sid)
    c.flush()
    end = time.monotonic() + 10
    while be.stats().get("active", 0) < 100 and time.monotonic() < end:
        time.sleep(0.05)
    assert be.stats().get("active", 0) >= 100
    second = []
    for _ in range(100):  # one write: all of them reach sidelb at once
        sid = c.conn.get_next_available_stream_id()
        c.conn.send_headers(sid, request_headers("/sidelb.test.Echo/ServerStream"))
        c.conn.send_data(sid, slow, end_stream=True)
        second.append(sid)
    c.flush()

    def done(evs):
        over = {e.stream_id for e in evs if isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))}
        return over >= set(first + second) or any(isinstance(e, h2.events.ConnectionTerminated) for e in evs)

    c.pump(done, timeout=30)
    assert not c.of(h2.events.ConnectionTerminated), c.of(h2.events.ConnectionTerminated)
    refused = sorted(e.stream_id for e in c.of(h2.events.StreamReset) if e.error_code == 7)  # REFUSED_STREAM
    assert refused == second
    assert [grpc_status(c, sid)[0] for sid in first] == [0] * 100
    # the same connection still takes calls
    sid = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"again")))
    c.pump(lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in evs))
    assert grpc_status(c, sid)[0] == 0
    good.finish()
    assert slb.alive()
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()
    assert "sidelb_downstream_refused_streams_total 100" in metrics
    assert slb.log().count("past max_concurrent_streams") == 1  # once per connection
    assert "rapid reset" not in slb.log()  # refusals are not the app's premature resets


def test_header_list_size_is_advertised_and_enforced_per_stream():
    be = peers.start_c_backend("mhls")
    admin_port = peers.free_port()
    cfg = simple_config([be.addr])
    cfg["admin"] = {"address": "127.0.0.1:%d" % admin_port}
    slb = start_sidelb(cfg)
    stub = peers.echo_stub(slb.addr)
    # grpcio: metadata below the default 16 KiB passes, above it the call alone fails
    r = stub.Unary(req(payload=b"small"), metadata=[("app-small", "a" * 12000)], timeout=5)
    assert r.payload == b"small"
    with pytest.raises(grpc.RpcError) as ei:
        stub.Unary(req(payload=b"big"), metadata=[("app-big", "b" * 20000)], timeout=5)
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, ei.value
    assert "max_header_list_size (16384 bytes)" in ei.value.details()
    assert stub.Unary(req(payload=b"after"), timeout=5).payload == b"after"

    c = RawClient(slb.port)
    c.pump(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    assert c.conn.remote_settings.max_header_list_size == 16384
    c.conn.remote_settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = 2 ** 31 - 1  # the client ignores it
    c.conn.remote_settings.acknowledge()
    unary0 = be.stats()["by_method"]["Unary"]
    # request headers over the limit: trailers-only RESOURCE_EXHAUSTED naming the limit
    big = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"x")), extra=[(b"x-big", b"b" * 20000)])
    # trailers over the limit before the response started: the same status
    late = c.request("/sidelb.test.Echo/ClientStream", grpc_frame(req(payload=b"x")), end=False)
    c.conn.send_headers(late, [(b"x-big-trailer", b"t" * 20000)], end_stream=True)
    c.flush()
    # trailers over the limit after the response started: RST_STREAM(ENHANCE_YOUR_CALM)
    streaming = c.request("/sidelb.test.Echo/ServerStream",
                          grpc_frame(req(payload=b"x", response_count=100, response_size=65536)), end=False)
    c.pump(lambda evs: any(isinstance(e, h2.events.DataReceived) and e.stream_id == streaming for e in evs))
    c.conn.send_headers(streaming, [(b"x-big-trailer", b"t" * 20000)], end_stream=True)
    c.flush()
    ok = c.request("/sidelb.test.Echo/Unary", grpc_frame(req(payload=b"ok")), extra=[(b"app-fine", b"f" * 8000)])

    def over(sid):
        return lambda evs: any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == sid
                               for e in evs)

    for sid in (big, late, streaming, ok):
        c.pump(over(sid), timeout=10)
    for sid in (big, late):
        status, msg = grpc_status(c, sid)
        assert status == 8 and b"max_header_list_size" in msg and b"16384" in msg, (sid, status, msg)
        assert len(c.of(h2.events.ResponseReceived, sid)) == 1 and not c.of(h2.events.DataReceived, sid)
    assert [e.error_code for e in c.of(h2.events.StreamReset, streaming)] == [11]  # ENHANCE_YOUR_CALM
    assert grpc_status(c, ok)[0] == 0
    assert not c.of(h2.events.ConnectionTerminated)
    assert be.stats()["by_method"]["Unary"] == unary0 + 1  # the oversized request never reached the backend
    assert slb.log().count("larger than max_header_list_size") == 2  # once per connection (grpcio's, ours)
    metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % admin_port, timeout=5).read().decode()
    assert "sidelb_downstream_header_lists_too_large_total 4" in metrics
    assert slb.alive()


def read_frames(sock, timeout=5.0):
    """Every frame until the peer closes: [(type, flags, stream id, payload)]."""
    data = b""
    sock.settimeout(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError("the connection stayed open")
    frames = []
    while len(data) >= 9:
        n = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7fffffff, data[9:9 + n]))
        data = data[9 + n:]
    return frames


def goaway_code(frames):
    codes = [int.from_bytes(p[4:8], "big") for t, _, _, p in frames if t == 7]
    return codes[0] if codes else None


def test_garbage_preface_is_a_connection_error_not_an_http1_reply():
    """h2spec http2/3.5/2: an invalid connection preface gets the connection
    closed (GOAWAY(PROTOCOL_ERROR) allowed), not an HTTP/1.1 text."""
    be = peers.start_c_backend("preface")
    slb = start_sidelb(simple_config([be.addr]))
    for garbage in (b"INVALID CONNECTION PREFACE\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n", b"\x16\x03\x01\x02\x00"):
        s = socket.create_connection(("127.0.0.1", slb.port), timeout=5)
        s.sendall(garbage)
        frames = read_frames(s)
        s.close()
        assert frames and frames[0][0] == 4, (garbage, frames)  # sidelb's SETTINGS first, no text
        assert goaway_code(frames) == 1, (garbage, frames)  # PROTOCOL_ERROR
    # an HTTP/1.x request line still gets the plain 505
    s = socket.create_connection(("127.0.0.1", slb.port), timeout=5)
    s.sendall(b"POST /sidelb.test.Echo/Unary HTTP/1.0\r\n\r\n")
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 505")
    s.close()
    assert peers.echo_stub(slb.addr).Unary(req(payload=b"ok"), timeout=5).payload == b"ok"


def raw_headers_frame(sid, block, end_stream=True):
    flags = 0x4 | (0x1 if end_stream else 0)  # END_HEADERS
    return len(block).to_bytes(3, "big") + bytes([1, flags]) + sid.to_bytes(4, "big") + block


def test_headers_on_a_skipped_lower_stream_id_is_a_connection_error():
    """h2spec http2/5.1.1/2: HEADERS on a stream id lower than one the client
    already opened is GOAWAY(PROTOCOL_ERROR); what follows it in the same
    read is not parsed (stream 7 never reaches the backend)."""
    be = peers.start_c_backend("lowsid")
    slb = start_sidelb(simple_config([be.addr]))
    c = RawClient(slb.port)
    c.pump(lambda evs: any(isinstance(e, h2.events.RemoteSettingsChanged) for e in evs))
    body = grpc_frame(req(payload=b"x"))
    hdrs = request_headers("/sidelb.test.Echo/Unary")
    c.conn.send_headers(5, hdrs)
    c.conn.send_data(5, body, end_stream=True)
    wire = c.conn.data_to_send()
    # stream 3 was skipped: HEADERS on it is a connection error; stream 7 comes after it
    wire += raw_headers_frame(3, c.conn.encoder.encode(hdrs))
    wire += raw_headers_frame(7, c.conn.encoder.encode(hdrs))
    c.sock.sendall(wire)
    frames = read_frames(c.sock)
    assert goaway_code(frames) == 1, frames  # PROTOCOL_ERROR
    assert be.stats().get("calls", 0) <= 1
    assert "skipped" in slb.log()

    # trailers on an open stream, and HEADERS on an id opened before, are no connection error
    c = RawClient(slb.port)
    sid = c.request("/sidelb.test.Echo/ClientStream", body, end=False)
    c.conn.send_headers(sid, [(b"x-trailer", b"t")], end_stream=True)
    c.flush()
    c.pump(lambda evs: any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in evs))
    assert grpc_status(c, sid)[0] == 0
    assert not c.of(h2.events.ConnectionTerminated)
    assert slb.alive()
