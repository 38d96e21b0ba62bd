"""Misbehaving apps, and a well-behaved one to measure beside them.

Used by test_misbehaviour.py (sidelb only, short runs with asserted bounds)
and tests/bench/isolation_bench.py (the same rows side by side with
HAProxy, longer runs, a table). Every misbehaviour is a raw python3-h2
client on its own sockets, started with .start() and ended with .stop();
none of them ever reads what sidelb sends unless the row says so.

    GoodApp(addr, rate=100, timeout=1.0)   grpcio unary calls at a fixed rate
                                           on a connection of its own; .start(),
                                           .stop() -> GoodApp.Result
    WindowStaller(port, n)                 n server-streaming calls whose
                                           flow-control windows are never reopened
                                           (the socket is read, no WINDOW_UPDATE)
    SocketStaller(port, n, size)           n unary calls with `size`-byte replies,
                                           socket never read
    RapidReset(port, conns)                HEADERS then RST_STREAM in a loop on
                                           `conns` connections (CVE-2023-44487)
"""

import multiprocessing
import os
import queue
import select
import signal
import socket
import struct
import threading
import time

import grpc
import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

import peers
from peers import req

ECHO = "/sidelb.test.Echo/"


def grpc_frame(msg):
    body = msg.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


def request_headers(method):
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":path", (ECHO + method).encode()),
            (b":authority", b"sidelb"), (b"content-type", b"application/grpc"), (b"te", b"trailers")]


def h2_client(port, rcvbuf=None):
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    return sock, conn


class GoodApp:
    """A well-behaved app: unary calls at `rate` per second with a deadline,
    on a grpcio channel with its own connection (no subchannel sharing)."""

    class Result:
        def __init__(self, latencies, errors):
            self.latencies = sorted(latencies)
            self.errors = errors
            self.total = len(latencies) + len(errors)

        @property
        def ok_ratio(self):
            return len(self.latencies) / self.total if self.total else 0.0

        def p99(self):
            if not self.latencies:
                return float("inf")
            return self.latencies[max(0, int(len(self.latencies) * 0.99) - 1)]

        def __str__(self):
            return "%d of %d OK, p99 %.1f ms, errors %s" % (
                len(self.latencies), self.total, self.p99() * 1000,
                sorted({str(e) for e in self.errors}))

    def __init__(self, addr, rate=100, timeout=1.0):
        self.channel = peers.channel(addr, **{"grpc.use_local_subchannel_pool": 1})
        self.stub = peers.echo_stub(self.channel)
        self.rate, self.timeout = rate, timeout
        self.latencies, self.errors = [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.stub.Unary(req(payload=b"warm"), timeout=5)  # connected before anything starts

    def _run(self):
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                r = self.stub.Unary(req(payload=b"good"), timeout=self.timeout)
                if r.payload != b"good":
                    raise AssertionError("wrong reply")
                self.latencies.append(time.monotonic() - t0)
            except grpc.RpcError as e:
                self.errors.append(e.code())
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_at = time.monotonic()  # fell behind: do not burst to catch up

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        self.channel.close()
        return GoodApp.Result(self.latencies, self.errors)


class WindowStaller:
    """n server-streaming calls with large replies; the app reads its socket
    (so TCP never pushes back) but never reopens a flow-control window."""

    def __init__(self, port, n=200, response_size=65536, response_count=1000):
        self.sock, self.conn = h2_client(port)
        body = grpc_frame(req(payload=b"s", response_size=response_size, response_count=response_count))
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, request_headers("ServerStream"))
            self.conn.send_data(sid, body, end_stream=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.received = 0

    def _run(self):
        try:
            self.sock.sendall(self.conn.data_to_send())
            while not self._stop.is_set():
                if not select.select([self.sock], [], [], 0.1)[0]:
                    continue
                data = self.sock.recv(65536)
                if not data:
                    return
                for ev in self.conn.receive_data(data):
                    if isinstance(ev, h2.events.DataReceived):
                        self.received += len(ev.data)  # never acknowledged: windows stay shut
                out = self.conn.data_to_send()  # SETTINGS / PING acks only
                if out:
                    self.sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            pass

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class SocketStaller:
    """n unary calls with `size`-byte replies on one connection whose socket
    is never read again."""

    def __init__(self, port, n=200, size=1 << 20):
        self.sock, self.conn = h2_client(port, rcvbuf=4096)
        # let the replies flow as far as HTTP/2 allows: only TCP holds them back
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: (1 << 31) - 1})
        self.conn.increment_flow_control_window((1 << 31) - 1 - 65535)
        body = grpc_frame(req(payload=b"s", response_size=size))
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, request_headers("Unary"))
            self.conn.send_data(sid, body, end_stream=True)

    def start(self):
        self.sock.sendall(self.conn.data_to_send())
        return self

    def stop(self):
        self.sock.close()


class RapidReset:
    """HEADERS then RST_STREAM(CANCEL) in a loop on `conns` connections, each
    reopened when sidelb closes it, until stopped. Counts the streams opened,
    the connections ended and the GOAWAY codes received.

    The flood runs in a child process of its own (stopped by PID): in this
    one it would hold the GIL and slow the good app's client instead of
    sidelb."""

    def __init__(self, port, conns=1):
        self.port, self.conns = port, conns
        self.opened, self.closes, self.goaways = 0, 0, []
        ctx = multiprocessing.get_context("fork")
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._proc = ctx.Process(target=self._child, daemon=True)

    def _child(self):
        # On 2 cores the flood competes with sidelb and the good app's client for the CPU; the
        # scheduler's choice is not what the tests measure, so the flood yields the CPU first.
        os.nice(19)
        lock = threading.Lock()
        totals = {"opened": 0, "closes": 0, "goaways": []}

        def one_connection():
            sock, conn = h2_client(self.port)
            try:
                sock.sendall(conn.data_to_send())
                while not self._stop.is_set():
                    for _ in range(50):
                        sid = conn.get_next_available_stream_id()
                        conn.send_headers(sid, request_headers("Unary"))
                        conn.reset_stream(sid, error_code=8)
                    with lock:
                        totals["opened"] += 50
                    sock.sendall(conn.data_to_send())
                    while select.select([sock], [], [], 0)[0]:
                        data = sock.recv(65536)
                        if not data:
                            return
                        for ev in conn.receive_data(data):
                            if isinstance(ev, h2.events.ConnectionTerminated):
                                with lock:
                                    totals["goaways"].append(ev.error_code)
            except (OSError, h2.exceptions.ProtocolError):
                pass
            finally:
                with lock:
                    totals["closes"] += 1
                sock.close()

        def run():
            while not self._stop.is_set():
                try:
                    one_connection()
                except OSError:
                    self._stop.wait(0.05)

        threads = [threading.Thread(target=run, daemon=True) for _ in range(self.conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._results.put(totals)

    def start(self):
        self._proc.start()
        return self

    def stop(self):
        self._stop.set()
        try:
            totals = self._results.get(timeout=10)
            self.opened, self.closes, self.goaways = totals["opened"], totals["closes"], totals["goaways"]
        except queue.Empty:
            pass
        self._proc.join(5)
        if self._proc.is_alive():
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.join(5)


class IdleFlood:
    """n connections that do nothing: the first half never send the
    preface, the others send the preface and SETTINGS and then go silent.
    Needs RLIMIT_NOFILE above n in this process. summary() tells how many
    the proxy has closed."""

    def __init__(self, port, n=5000):
        self.port, self.n = port, n
        self.socks = []

    def start(self):
        preface = h2_client_preface()
        for i in range(self.n):
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                continue  # refused or reset at the proxy's cap: counted as not open
            if i % 2:
                s.sendall(preface)
            s.setblocking(False)
            self.socks.append(s)
        return self

    def still_open(self):
        n = 0
        for s in self.socks:
            try:
                while True:
                    data = s.recv(65536)
                    if not data:
                        break  # closed by the proxy
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def summary(self):
        return "%d of %d idle connections opened, %d still open" % (len(self.socks), self.n, self.still_open())

    def stop(self):
        for s in self.socks:
            s.close()


def h2_client_preface():
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    return conn.data_to_send()


class ExcessStreams:
    """One connection opens as many calls as the proxy's advertised
    MAX_CONCURRENT_STREAMS allows (each held open `hold_ms` by the backend),
    then `extra` more past the limit. summary() tells what became of the
    established calls and of the extra ones."""

    def __init__(self, port, extra=100, hold_ms=3000):
        self.sock, self.conn = h2_client(port)
        self.extra, self.hold_ms = extra, hold_ms
        self.established, self.excess = set(), set()
        self.ok, self.resets, self.goaway = set(), {}, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, n, into):
        body = grpc_frame(req(payload=b"x", delay_ms=self.hold_ms))
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, request_headers("Unary"))
            self.conn.send_data(sid, body, end_stream=True)
            into.add(sid)

    def _handle(self, data):
        for ev in self.conn.receive_data(data):
            if isinstance(ev, h2.events.RemoteSettingsChanged) and not self.established:
                changed = ev.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                limit = changed.new_value if changed else 100
                self._open(limit, self.established)
                # past the limit on purpose: h2 would refuse to send these
                self.conn.remote_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = (1 << 31) - 1
                self.conn.remote_settings.acknowledge()
                self._open(self.extra, self.excess)
            elif isinstance(ev, h2.events.TrailersReceived):
                if dict(ev.headers).get(b"grpc-status") == b"0":
                    self.ok.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.goaway = ev.error_code
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)

    def _run(self):
        try:
            self.sock.sendall(self.conn.data_to_send())
            while not self._stop.is_set():
                if select.select([self.sock], [], [], 0.1)[0]:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    self._handle(data)
                out = self.conn.data_to_send()
                if out:
                    self.sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError):
            pass

    def start(self):
        self._thread.start()
        return self

    def summary(self):
        refused = sum(1 for sid in self.excess if self.resets.get(sid) == 7)
        return "established %d: %d OK; extra %d: %d refused; GOAWAY %s" % (
            len(self.established), len(self.ok & self.established), len(self.excess), refused,
            "none" if self.goaway is None else str(self.goaway))

    def stop(self):
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
