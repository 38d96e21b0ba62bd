"""HTTP/2 server conformance cases, after h2spec 2.6 (`generic` and `http2`
groups, --strict): one entry per h2spec case, same section id, description,
frames sent and verdict rule. Written for sidelb's tests from the RFCs and
h2spec's case list; no h2spec code.

A case is Case(id, desc, send, expect) (the table is test_h2_conformance.CASES):
    id      h2spec's id, "<group>/<section>/<n>" (e.g. "http2/6.5.3/1")
    send    fn(conn): the frames (after the handshake unless handshake=False);
            it may itself wait for something first (e.g. a stream to close)
    expect  an Expect: how the server must answer (verify(conn) raises
            CaseFailed(expected, actual) otherwise)
Case.run(addr, authority) runs it on a new connection and returns, for the
error verdicts, the event it passed on (a GOAWAY, a RST_STREAM, or CLOSED).

Verdicts follow h2spec's (spec/verifier.go):
    ConnError(*codes)   GOAWAY with one of codes, or the connection closed
    StreamError(*codes) RST_STREAM or GOAWAY with one of codes, or closed
    Closed()            the connection closed (frames before it are fine)
    Headers(sid)        the next HEADERS frame is on stream sid
    FrameType(cls)      a frame of that type arrives (others skipped)
    PingAck(data)       the next PING is an ACK carrying data (eventually=True: any later one)
    PingAckOrClose(data)
    SettingsAck()       the next SETTINGS is an ACK
    ServerSettings()    the next SETTINGS is the server's own (first=True: as the very first frame)
    DataLength(n)       the next DATA frame carries n bytes
    GoawayCode(code)    the next GOAWAY carries code (closing without one fails)
    RstCode(sid, code)  the next RST_STREAM is on sid with code
    AnyGoaway()         a GOAWAY (any code) before the connection closes
Each wait for a frame gives up after `timeout` seconds (h2spec: 2 s); a
timeout or a close where a frame was required fails the case, and so do
bytes that are no frame (h2spec's framer error), e.g. an HTTP/1.1 reply or
a connection closed in the middle of a frame.

Like h2spec's client, Conn answers the server's SETTINGS and returns DATA
it receives as WINDOW_UPDATEs (per stream and connection, against a 65535
window), and nothing else on its own.
"""

import errno
import socket
import struct

import hpack
from hpack.hpack import encode_integer
from hpack.huffman import HuffmanEncoder
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (DataFrame, Frame, GoAwayFrame, HeadersFrame, PingFrame,
                              RstStreamFrame, SettingsFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
UNKNOWN_TYPE = 0x16  # no such frame type: must be ignored
# flags
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
# settings
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = \
    range(1, 7)
# error codes (RFC 9113 7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x5, 0x6, 0x7, 0x8, 0x9

ERROR_NAMES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
               4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL",
               9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM", 12: "INADEQUATE_SECURITY",
               13: "HTTP_1_1_REQUIRED"}

DEFAULT_WINDOW = 65535
DEFAULT_FRAME_SIZE = 16384
MAX_HEADER_LEN = 4000  # h2spec's --max-header-length default: the size of its dummy header values

CLOSED = "connection closed"
TIMEOUT = "timeout"
# bytes that are no valid frame (e.g. an HTTP/1.1 text, or a frame over our 16384-byte limit): like
# h2spec's framer error, the connection counts as closed, but this is no "connection closed" event
BAD_FRAME = "not an HTTP/2 frame"


class TruncatedFrame(Exception):
    """EOF inside a frame: an error (h2spec: io.ErrUnexpectedEOF), not a clean close."""


class CaseFailed(AssertionError):
    def __init__(self, expected, actual):
        self.expected = expected
        self.actual = actual
        super().__init__("expected %s; got %s" % (" or ".join(expected), describe(actual)))


def describe(ev):
    if ev is None:
        return "nothing"
    if isinstance(ev, str):
        return ev
    if isinstance(ev, (GoAwayFrame, RstStreamFrame)):
        return "%s(%s) on stream %d" % (type(ev).__name__, ERROR_NAMES.get(ev.error_code, ev.error_code),
                                       ev.stream_id)
    return "%s(stream %d, flags %s, length %d)" % (type(ev).__name__, ev.stream_id, sorted(ev.flags),
                                                   getattr(ev, "body_len", 0))


def code_names(codes):
    return "/".join(ERROR_NAMES.get(c, str(c)) for c in codes)


# ---- frames as bytes (any of them malformed at will) ----

def frame(ftype, flags, sid, payload=b"", length=None):
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def priority_fields(dep, weight, exclusive=False):
    return struct.pack(">IB", dep | (0x80000000 if exclusive else 0), weight)


def settings_payload(*pairs):
    return b"".join(struct.pack(">HI", k, v) for k, v in pairs)


# ---- HPACK representations built by hand (RFC 7541 6), for the HPACK cases ----

_huffman = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)


def hpack_int(value, prefix_bits, pattern):
    b = encode_integer(value, prefix_bits)
    b[0] |= pattern
    return bytes(b)


def hpack_str(s, huffman):
    raw = s.encode()
    if huffman:
        raw = _huffman.encode(raw)
    return hpack_int(len(raw), 7, 0x80 if huffman else 0) + raw


def hpack_indexed(index):
    return hpack_int(index, 7, 0x80)


def hpack_literal(kind, name, value, huffman=False):
    """kind: "incremental" (6.2.1), "without" (6.2.2) or "never" (6.2.3) indexing;
    name: a static table index (indexed name) or a string (new name)."""
    bits, pattern = {"incremental": (6, 0x40), "without": (4, 0x00), "never": (4, 0x10)}[kind]
    if isinstance(name, int):
        return hpack_int(name, bits, pattern) + hpack_str(value, huffman)
    return hpack_int(0, bits, pattern) + hpack_str(name, huffman) + hpack_str(value, huffman)


def hpack_table_size_update(size):
    return hpack_int(size, 5, 0x20)


USER_AGENT = 58  # static table index of user-agent


class Conn:
    """One client connection to the server under test."""

    def __init__(self, addr, timeout=2.0):
        self.addr = addr
        self.timeout = timeout
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False
        self.encoder = hpack.Encoder()
        self.settings = {}  # the server's
        self.windows = {0: DEFAULT_WINDOW}  # what we still let the server send, h2spec's way
        self.buf = b""
        self.passed_on = None  # the event a ConnError/StreamError verdict passed on

    def close(self):
        self.sock.close()

    # ---- writing ----

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the server may have closed already; reading tells

    def encode(self, headers):
        return self.encoder.encode(headers)

    def headers(self, sid, block, end_stream=True, end_headers=True, pad=None, priority=None):
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = block
        if priority is not None:
            flags |= PRIORITY_FLAG
            payload = priority_fields(*priority) + payload
        if pad is not None:
            flags |= PADDED
            payload = bytes([pad]) + payload + bytes(pad)
        self.send(frame(HEADERS, flags, sid, payload))

    def continuation(self, sid, block, end_headers=True):
        self.send(frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, block))

    def data(self, sid, payload, end_stream=True, pad=None):
        flags = END_STREAM if end_stream else 0
        if pad is not None:
            flags |= PADDED
            payload = bytes([len(pad)]) + payload + pad
        self.send(frame(DATA, flags, sid, payload))

    def priority(self, sid, dep=0, weight=255, exclusive=False):
        self.send(frame(PRIORITY, 0, sid, priority_fields(dep, weight, exclusive)))

    def rst_stream(self, sid, code):
        self.send(frame(RST_STREAM, 0, sid, struct.pack(">I", code)))

    def settings_frame(self, *pairs):
        self.send(frame(SETTINGS, 0, 0, settings_payload(*pairs)))

    def ping(self, data, ack=False):
        self.send(frame(PING, ACK if ack else 0, 0, data))

    def goaway(self, last_sid, code, debug=b""):
        self.send(frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code) + debug))

    def window_update(self, sid, increment):
        self.send(frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment)))

    def push_promise(self, sid, promised, block):
        self.send(frame(PUSH_PROMISE, END_HEADERS, sid, struct.pack(">I", promised) + block))

    def handshake(self):
        """Preface and SETTINGS(INITIAL_WINDOW_SIZE=65535); done once the server's SETTINGS
        arrived (and was acknowledged) and ours was acknowledged."""
        self.send(PREFACE)
        self.settings_frame((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
        local = remote = False
        while not (local and remote):
            ev = self.wait_event()
            if isinstance(ev, str):
                raise CaseFailed(["handshake (SETTINGS both ways)"], ev)
            if isinstance(ev, SettingsFrame):
                if "ACK" in ev.flags:
                    local = True
                else:
                    remote = True
                    self.settings.update(ev.settings)
                    self.send(frame(SETTINGS, ACK, 0))

    def max_frame_size(self):
        return self.settings.get(MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)

    # ---- reading ----

    def _read_exact(self, n, frame_started):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                if frame_started or self.buf:
                    raise TruncatedFrame()
                raise ConnectionResetError(errno.ECONNRESET, "closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def wait_event(self):
        """The next frame (a hyperframe Frame), CLOSED or TIMEOUT. After CLOSED or
        TIMEOUT the connection counts as closed (as in h2spec)."""
        if self.closed:
            return CLOSED
        self.sock.settimeout(self.timeout)
        try:
            hdr = self._read_exact(9, False)
            f, length = Frame.parse_frame_header(memoryview(hdr))
            if length > DEFAULT_FRAME_SIZE:  # we never allow more
                self.closed = True
                return "%s: %r" % (BAD_FRAME, hdr)
            f.parse_body(memoryview(self._read_exact(length, True)))
        except socket.timeout:
            self.closed = True
            return TIMEOUT
        except TruncatedFrame:
            self.closed = True
            return "%s: the connection closed inside a frame" % BAD_FRAME
        except OSError:  # EOF between frames, ECONNRESET
            self.closed = True
            return CLOSED
        except HyperframeError as e:
            self.closed = True
            return "%s: %s" % (BAD_FRAME, e)
        if isinstance(f, DataFrame):
            self._return_window(f.stream_id, f.flow_controlled_length)
        return f

    def _return_window(self, sid, n):
        for key in (sid, 0):
            w = self.windows.get(key, DEFAULT_WINDOW) - n
            if w <= 0:
                self.window_update(key, DEFAULT_WINDOW - w)
                w = DEFAULT_WINDOW
            self.windows[key] = w

    def wait_type(self, cls):
        """h2spec's WaitEventByType: (the first frame of type cls, True), or (the last event, False)
        once the connection closed or timed out."""
        last = None
        while not self.closed:
            ev = self.wait_event()
            if isinstance(ev, cls):
                return ev, True
            if ev == TIMEOUT and last is not None:
                break
            last = ev
        return last, False


# ---- expectations ----

class Expect:
    def verify(self, conn):
        raise NotImplementedError

    def __repr__(self):
        return type(self).__name__


class ConnError(Expect):
    def __init__(self, *codes):
        self.codes = codes

    def verify(self, conn):
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if ev == CLOSED or (isinstance(ev, GoAwayFrame) and ev.error_code in self.codes):
                conn.passed_on = describe(ev)
                return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed(["GOAWAY(%s)" % code_names(self.codes), CLOSED], actual)

    def __repr__(self):
        return "ConnError(%s)" % code_names(self.codes)


class StreamError(Expect):
    def __init__(self, *codes):
        self.codes = codes

    def verify(self, conn):
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if ev == CLOSED or (isinstance(ev, (GoAwayFrame, RstStreamFrame)) and ev.error_code in self.codes):
                conn.passed_on = describe(ev)
                return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed(["RST_STREAM(%s)" % code_names(self.codes), "GOAWAY(%s)" % code_names(self.codes),
                          CLOSED], actual)

    def __repr__(self):
        return "StreamError(%s)" % code_names(self.codes)


class Closed(Expect):
    def verify(self, conn):
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if ev == CLOSED:
                return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed([CLOSED], actual)


class StreamClosed(Expect):
    """The response on some stream ended (END_STREAM, or RST_STREAM(NO_ERROR))."""

    def verify(self, conn):
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if isinstance(ev, (DataFrame, HeadersFrame)) and "END_STREAM" in ev.flags:
                return
            if isinstance(ev, RstStreamFrame) and ev.error_code == NO_ERROR:
                return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed(["a stream ended"], actual)


class FrameType(Expect):
    def __init__(self, cls):
        self.cls = cls

    def verify(self, conn):
        ev, ok = conn.wait_type(self.cls)
        if not ok:
            raise CaseFailed([self.cls.__name__], ev)

    def __repr__(self):
        return "FrameType(%s)" % self.cls.__name__


class Headers(Expect):
    def __init__(self, sid):
        self.sid = sid

    def verify(self, conn):
        ev, ok = conn.wait_type(HeadersFrame)
        if not ok or ev.stream_id != self.sid:
            raise CaseFailed(["HEADERS on stream %d" % self.sid], ev)

    def __repr__(self):
        return "Headers(%d)" % self.sid


class PingAck(Expect):
    """The next PING is an ACK carrying data; eventually=True: some later PING may be (other
    frames and PINGs before it are skipped), unless it echoes `never`."""

    def __init__(self, data, eventually=False, never=None):
        self.data = data
        self.eventually = eventually
        self.never = never

    def verify(self, conn):
        if not self.eventually:
            ev, ok = conn.wait_type(PingFrame)
            if not ok or "ACK" not in ev.flags or ev.opaque_data != self.data:
                raise CaseFailed(["PING(ACK, %r)" % self.data], ev)
            return
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if isinstance(ev, PingFrame):
                if self.never is not None and ev.opaque_data == self.never:
                    raise CaseFailed(["no answer to the PING with ACK"], "PING(%r)" % ev.opaque_data)
                if "ACK" in ev.flags and ev.opaque_data == self.data:
                    return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed(["PING(ACK, %r)" % self.data], actual)


class PingAckOrClose(Expect):
    def __init__(self, data):
        self.data = data

    def verify(self, conn):
        actual = None
        while not conn.closed:
            ev = conn.wait_event()
            if ev == CLOSED or (isinstance(ev, PingFrame) and "ACK" in ev.flags and ev.opaque_data == self.data):
                return
            if ev != TIMEOUT or actual is None:
                actual = ev
        raise CaseFailed(["PING(ACK, %r)" % self.data, CLOSED], actual)


class SettingsAck(Expect):
    def verify(self, conn):
        ev, ok = conn.wait_type(SettingsFrame)
        if not ok or "ACK" not in ev.flags:
            raise CaseFailed(["SETTINGS(ACK)"], ev)


class ServerSettings(Expect):
    """The first SETTINGS the server sends is its own (no ACK); first=True: and it is the very
    first frame."""

    def __init__(self, first=False):
        self.first = first

    def verify(self, conn):
        if self.first:
            ev, ok = conn.wait_event(), True
        else:
            ev, ok = conn.wait_type(SettingsFrame)
        if not ok or not isinstance(ev, SettingsFrame) or "ACK" in ev.flags:
            raise CaseFailed(["SETTINGS (no ACK)%s" % (" as the first frame" if self.first else "")], ev)


class DataLength(Expect):
    def __init__(self, n):
        self.n = n

    def verify(self, conn):
        ev, ok = conn.wait_type(DataFrame)
        if not ok or len(ev.data) != self.n:
            raise CaseFailed(["DATA of %d bytes" % self.n], ev if not ok else "DATA of %d bytes" % len(ev.data))

    def __repr__(self):
        return "DataLength(%d)" % self.n


class GoawayCode(Expect):
    def __init__(self, code):
        self.code = code

    def verify(self, conn):
        ev, ok = conn.wait_type(GoAwayFrame)
        if not ok or ev.error_code != self.code:
            raise CaseFailed(["GOAWAY(%s)" % code_names([self.code])], ev)

    def __repr__(self):
        return "GoawayCode(%s)" % code_names([self.code])


class RstCode(Expect):
    def __init__(self, sid, code):
        self.sid = sid
        self.code = code

    def verify(self, conn):
        ev, ok = conn.wait_type(RstStreamFrame)
        if not ok or ev.stream_id != self.sid or ev.error_code != self.code:
            raise CaseFailed(["RST_STREAM(%s) on stream %d" % (code_names([self.code]), self.sid)], ev)

    def __repr__(self):
        return "RstCode(%d, %s)" % (self.sid, code_names([self.code]))


class AnyGoaway(Expect):
    def verify(self, conn):
        actual = None
        while not conn.closed:
            actual = conn.wait_event()
            if isinstance(actual, GoAwayFrame):
                return
        raise CaseFailed(["GOAWAY(%s)" % code_names([PROTOCOL_ERROR])], actual)


class Case:
    def __init__(self, id, desc, send, expect, handshake=True, data_needed=0, note=None):
        self.id = id
        self.desc = desc
        self.send = send
        self.expect = expect
        self.handshake = handshake
        self.data_needed = data_needed  # h2spec skips the case below this many bytes of response body to GET /
        self.note = note  # where it differs from h2spec, and why

    def run(self, addr, authority, timeout=2.0):
        """Runs the case on a new connection; raises CaseFailed, or returns the event an error
        verdict passed on (e.g. "GoAwayFrame(PROTOCOL_ERROR) on stream 0", or CLOSED)."""
        conn = Conn(addr, timeout)
        conn.authority = authority
        try:
            if self.handshake:
                conn.handshake()
            self.send(conn)
            self.expect.verify(conn)
            return conn.passed_on
        finally:
            conn.close()

    def __repr__(self):
        return "%s %s" % (self.id, self.desc)


# ---- the requests the cases send ----

def common(conn, method="GET"):
    """h2spec's CommonHeaders: GET / with :scheme http and :authority host:port."""
    return [(":method", method), (":scheme", "http"), (":path", "/"), (":authority", conn.authority)]


def dummy(n):
    """h2spec's DummyHeaders: n fields x-dummyI of MAX_HEADER_LEN 'x's."""
    return [("x-dummy%d" % i, "x" * MAX_HEADER_LEN) for i in range(n)]


def get(conn, sid=1, end_stream=True, extra=(), **kw):
    conn.headers(sid, conn.encode(common(conn) + list(extra)), end_stream=end_stream, **kw)


def post(conn, sid=1, extra=(), end_headers=True):
    conn.headers(sid, conn.encode(common(conn, "POST") + list(extra)), end_stream=False, end_headers=end_headers)


def wait_stream_closed(conn):
    StreamClosed().verify(conn)


def wait_settings(conn):
    FrameType(SettingsFrame).verify(conn)


def response_body_length(addr, authority, timeout=2.0):
    """h2spec's ServerDataLength: bytes of the response body to GET / on a fresh connection."""
    conn = Conn(addr, timeout)
    conn.authority = authority
    try:
        conn.handshake()
        get(conn)
        n = 0
        while not conn.closed:
            ev = conn.wait_event()
            if isinstance(ev, DataFrame):
                n += len(ev.data)
            if isinstance(ev, (DataFrame, HeadersFrame)) and "END_STREAM" in ev.flags:
                return n
        raise CaseFailed(["a complete response to GET /"], ev)
    finally:
        conn.close()


PING_DATA = b"h2spec\0\0"
ZERO8 = bytes(8)
