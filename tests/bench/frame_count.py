#!/usr/bin/python3
"""HTTP/2 frames per unary call between a proxy and its backend: sidelb vs HAProxy.

    SIDELB_BUILD=build /usr/bin/python3 tests/bench/frame_count.py [--calls N] [--warmup W]
        [--payload BYTES] [--client h2load|grpc] [--conns C] [--streams M] [--targets sidelb,haproxy]
        [--show-headers] [--json]

A frame-counting TCP relay sits between the proxy and one C test backend
(tests/backend): it passes the bytes on unchanged and parses both byte streams
with hyperframe (after the client preface). Per target: W warm-up calls
(connections, SETTINGS, HPACK tables), then N unary calls; the figures are the
frames the measured calls caused, divided by N:

  proxy -> backend   HEADERS, DATA, WINDOW_UPDATE, SETTINGS, PING, RST_STREAM, ...
                     and the bytes of encoded header blocks (HEADERS + CONTINUATION payloads)
  backend -> proxy   the same (what the backend sends back; WINDOW_UPDATEs answer
                     the proxy's DATA, DATA and trailers follow the proxy's windows)

Calls are the same as `make bench` (tests/bench/bench.py): h2load posting one
gRPC message of --payload bytes to sidelb.test.Echo/Unary (the reply carries
the same payload), HAProxy configured by bench.haproxy_config. --client grpc
makes the calls with python grpcio instead (a real gRPC client's headers, with
a deadline, so grpc-timeout is forwarded). By default the calls are made one
at a time (-c 1 -m 1), so the counts do not depend on timing: after each phase
the relay waits until no byte has moved for a moment before reading its
counters. New backend connections during the measured phase are reported
(they should be 0).

measure(name, ...) is used by bench.py and tests/integration/test_frames.py.
"""

import argparse
import collections
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time

import hpack
import hyperframe.frame

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import bench  # noqa: E402  (grpc_frame, haproxy_config, run_h2load, reply_frame_len, Target)
import peers  # noqa: E402
import sidelb_harness  # noqa: E402

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TYPES = ["HEADERS", "CONTINUATION", "DATA", "WINDOW_UPDATE", "SETTINGS", "PING", "RST_STREAM", "PRIORITY",
         "GOAWAY"]
UP, DOWN = "proxy->backend", "backend->proxy"


def frame_type_name(frame):
    name = type(frame).__name__
    return {"DataFrame": "DATA", "HeadersFrame": "HEADERS", "PriorityFrame": "PRIORITY",
            "RstStreamFrame": "RST_STREAM", "SettingsFrame": "SETTINGS", "PushPromiseFrame": "PUSH_PROMISE",
            "PingFrame": "PING", "GoAwayFrame": "GOAWAY", "WindowUpdateFrame": "WINDOW_UPDATE",
            "ContinuationFrame": "CONTINUATION"}.get(name, "type%d" % getattr(frame, "type", -1))


class FrameCounter:
    """Counts of one direction of all relayed connections (shared, under the relay's lock)."""

    def __init__(self):
        self.frames = collections.Counter()  # type name -> frames
        self.header_bytes = 0  # HEADERS + CONTINUATION payloads (header block fragments)
        self.data_bytes = 0  # DATA payloads
        self.bytes = 0  # everything, frame headers included

    def snapshot(self):
        s = FrameCounter()
        s.frames = collections.Counter(self.frames)
        s.header_bytes, s.data_bytes, s.bytes = self.header_bytes, self.data_bytes, self.bytes
        return s


class _Parser:
    """Splits one direction's byte stream into frames without altering it."""

    def __init__(self, counter, lock, preface, headers_log):
        self.counter = counter
        self.lock = lock
        self.buf = bytearray()
        self.skip_preface = preface
        self.decoder = hpack.Decoder() if headers_log is not None else None
        self.headers_log = headers_log  # list: decoded header blocks of this direction (--show-headers)
        self.block = bytearray()

    def feed(self, data):
        self.buf += data
        with self.lock:
            self.counter.bytes += len(data)
        if self.skip_preface:
            if len(self.buf) < len(PREFACE):
                return
            if bytes(self.buf[:len(PREFACE)]) != PREFACE:
                raise ValueError("not an HTTP/2 client preface")
            del self.buf[:len(PREFACE)]
            self.skip_preface = False
        while len(self.buf) >= 9:
            frame, length = hyperframe.frame.Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
            if len(self.buf) < 9 + length:
                return
            body = bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            name = frame_type_name(frame)
            with self.lock:
                self.counter.frames[name] += 1
                if name in ("HEADERS", "CONTINUATION"):
                    self.counter.header_bytes += length
                elif name == "DATA":
                    self.counter.data_bytes += length
            if self.decoder is not None and name in ("HEADERS", "CONTINUATION"):
                frame.parse_body(memoryview(body))
                self.block += frame.data
                if "END_HEADERS" in frame.flags:
                    self.headers_log.append((len(self.block), self.decoder.decode(bytes(self.block), raw=True)))
                    self.block = bytearray()


class Relay:
    """TCP relay 127.0.0.1:port -> target that counts the HTTP/2 frames of both directions."""

    def __init__(self, target_addr, keep_headers=False):
        host, port = target_addr.rsplit(":", 1)
        self.target = (host, int(port))
        self.lock = threading.Lock()
        self.up, self.down = FrameCounter(), FrameCounter()
        self.connections = 0
        self.moved_at = time.monotonic()
        self.errors = []
        self.keep_headers = keep_headers
        self.headers = {UP: [], DOWN: []}
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.socks = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target, timeout=5)
                b.settimeout(None)
            except OSError as e:
                self.errors.append("connect to backend: %s" % e)
                a.close()
                continue
            for s in (a, b):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                self.socks += [a, b]
            up = _Parser(self.up, self.lock, True, self.headers[UP] if self.keep_headers else None)
            down = _Parser(self.down, self.lock, False, self.headers[DOWN] if self.keep_headers else None)
            threading.Thread(target=self._pump, args=(a, b, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, down), daemon=True).start()

    def _pump(self, src, dst, parser):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)  # unchanged, before parsing: counting never delays a byte
                self.moved_at = time.monotonic()
                parser.feed(data)
        except (OSError, ValueError) as e:
            if not self.closed and not isinstance(e, OSError):
                self.errors.append("parse: %s" % e)
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def settle(self, quiet=0.3, timeout=10.0):
        """Waits until no byte has moved for `quiet` seconds, then returns the counters."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and time.monotonic() - self.moved_at < quiet:
            time.sleep(0.05)
        with self.lock:
            return self.up.snapshot(), self.down.snapshot(), self.connections

    def close(self):
        self.closed = True
        self.lsock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass


def per_call(before, after, calls):
    """Frames by type and byte counts the calls between two snapshots caused, per call."""
    frames = {t: (after.frames[t] - before.frames[t]) / calls for t in set(after.frames) | set(before.frames)}
    return {"frames": {t: v for t, v in frames.items() if v}, "frames_total": sum(frames.values()),
            "header_bytes": (after.header_bytes - before.header_bytes) / calls,
            "data_bytes": (after.data_bytes - before.data_bytes) / calls,
            "bytes": (after.bytes - before.bytes) / calls}


# ---------------------------------------------------------------- proxies and clients


def start_proxy(name, backend_addr, tmp, streams, binary=None):
    """sidelb (as bench.py configures it) or HAProxy (bench.haproxy_config) in front of one backend."""
    if name in ("sidelb", "before"):
        cfg = sidelb_harness.simple_config([backend_addr], max_connections_per_backend=2)
        cfg["listeners"][0]["max_concurrent_streams"] = 10000
        p = sidelb_harness.start_sidelb(cfg, log_level="notice", binary=binary)
        return bench.Target(name, p.port, p)
    if name == "haproxy":
        port = peers.free_port()
        path = bench.haproxy_config(tmp, port, [_Addr(backend_addr)], streams)
        p = peers.Proc(["haproxy", "-f", path, "-db"], name="haproxy", ready=None, port=port)
        return bench.Target(name, port, p)
    raise ValueError("unknown target %r" % name)


class _Addr:
    """What bench.haproxy_config reads of a backend."""

    def __init__(self, addr):
        self.addr = addr


def h2load_calls(target, n, opts, tmp, body_path, expect_data):
    r = bench.run_h2load(opts, target, body_path, tmp, n, [], expect_data)
    if not r["ok"]:
        raise RuntimeError("%s: h2load: %s\n%s" % (target.name, r.get("why"), r["out"][-1500:]))


def grpc_calls(target, n, payload, vary_deadline=False):
    """n calls, one at a time, over one channel; each with a deadline (grpc-timeout is forwarded): 30 s,
    or with vary_deadline what calls in a traced system carry: a different deadline per call
    (2 s + 0..3 s in 3 ms steps, as when set upstream of the app) and an x-request-id of its own."""
    ch = peers.channel("127.0.0.1:%d" % target.port)
    try:
        stub = peers.echo_stub(ch)
        r = peers.req(payload=b"x" * payload)
        for i in range(n):
            if vary_deadline:
                rep = stub.Unary(r, timeout=2 + (i * 7919 % 1000) * 0.003,
                                 metadata=(("x-request-id", "%032x" % random.getrandbits(128)),))
            else:
                rep = stub.Unary(r, timeout=30)
            if rep.payload != r.payload:
                raise RuntimeError("%s: wrong reply payload" % target.name)
    finally:
        ch.close()


def measure(name, calls=200, warmup=100, payload=100, client="h2load", conns=1, streams=1, binary=None,
            keep_headers=False, tmp=None, backend="c", vary_deadline=False, headers=(), settle=0.5, stop=True):
    """Starts a backend (c: tests/backend; grpcio: tests/integration/echo_server.py), a relay and the
    proxy `name`; returns the per-call figures of `calls` calls after `warmup` calls:
    {"up": per_call, "down": per_call, "new_connections": n, "request_frame": bytes, "reply_frame": bytes}.
    Stops what it started (stop=False: leaves the processes to the caller, e.g. the test's teardown)."""
    own_tmp = tmp is None
    tmp = tmp or tempfile.mkdtemp(prefix="sidelb-frames-")
    since = len(peers._procs)
    relay = None
    try:
        if backend == "c":
            be = peers.start_c_backend("frames", stats=False, extra_args=["--max-concurrent-streams", "100000"])
        else:
            be = peers.start_py_backend("frames")
        relay = Relay(be.addr, keep_headers=keep_headers)
        target = start_proxy(name, relay.addr, tmp, streams, binary)
        opts = argparse.Namespace(conns=conns, streams=streams, pin=False, run_timeout=60, headers=list(headers))
        if client == "h2load":
            body_path = os.path.join(tmp, "body.bin")
            with open(body_path, "wb") as f:
                f.write(bench.grpc_frame(payload))
            expect = bench.reply_frame_len(be.addr, payload)

            def run(n):
                h2load_calls(target, n, opts, tmp, body_path, expect)
        else:

            def run(n):
                grpc_calls(target, n, payload, vary_deadline)

        run(warmup)
        up0, down0, conns0 = relay.settle(settle)
        run(calls)
        up1, down1, conns1 = relay.settle(settle)
        if relay.errors:
            raise RuntimeError("relay: %s" % "; ".join(relay.errors))
        res = {"target": name, "client": client, "backend": backend, "calls": calls, "payload": payload,
               "up": per_call(up0, up1, calls), "down": per_call(down0, down1, calls),
               "new_connections": conns1 - conns0, "connections": conns1, "request_frame": len(bench.grpc_frame(payload)),
               "reply_frame": bench.reply_frame_len(be.addr, payload)}
        if keep_headers:
            res["headers"] = {d: relay.headers[d][-3:] for d in (UP, DOWN)}
        return res
    finally:
        if relay is not None:
            relay.close()
        for p in (peers.stop_all(since) if stop else ()):
            p.remove_files()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def format_table(results):
    """Rows: frame types and byte counts per call; columns: each target, both directions."""
    cols = [(r["target"], d, r[d], r) for d in ("up", "down") for r in results]
    head = ["%-24s" % "per call"] + ["%16s" % ("%s %s" % (t, "->be" if d == "up" else "<-be")) for t, d, _, _ in cols]
    lines = ["".join(head)]
    types = [t for t in TYPES if any(c[2]["frames"].get(t) for c in cols)]
    types += sorted({t for c in cols for t in c[2]["frames"]} - set(types))
    for t in types:
        lines.append("%-24s" % ("  " + t) + "".join("%16.3f" % c[2]["frames"].get(t, 0) for c in cols))
    lines.append("%-24s" % "frames" + "".join("%16.3f" % c[2]["frames_total"] for c in cols))
    lines.append("%-24s" % "header block bytes" + "".join("%16.1f" % c[2]["header_bytes"] for c in cols))
    lines.append("%-24s" % "DATA payload bytes" + "".join("%16.1f" % c[2]["data_bytes"] for c in cols))
    lines.append("%-24s" % "all bytes" + "".join("%16.1f" % c[2]["bytes"] for c in cols))
    lines.append("%-24s" % "backend conns (new)" + "".join("%16s" % ("%d (%d)" % (c[3]["connections"],
                                                                                  c[3]["new_connections"]))
                                                          for c in cols))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=1000, help="measured calls (default 1000)")
    ap.add_argument("--warmup", type=int, default=200, help="warm-up calls (default 200)")
    ap.add_argument("--payload", type=int, default=100, help="request (and reply) payload bytes (default 100)")
    ap.add_argument("--client", choices=("h2load", "grpc"), default="h2load")
    ap.add_argument("--backend", choices=("c", "grpcio"), default="c",
                    help="c: tests/backend (default); grpcio: tests/integration/echo_server.py")
    ap.add_argument("--vary-deadline", action="store_true",
                    help="--client grpc: a different deadline and x-request-id on each call (else 30 s on all)")
    ap.add_argument("--header", action="append", default=[],
                    help="--client h2load: one more request header, e.g. 'grpc-timeout: 5S' (repeatable)")
    ap.add_argument("--conns", type=int, default=1, help="h2load -c (default 1)")
    ap.add_argument("--streams", type=int, default=1, help="h2load -m (default 1: calls one at a time)")
    ap.add_argument("--targets", default="sidelb,haproxy")
    ap.add_argument("--before", default=os.environ.get("SIDELB_BEFORE"),
                    help="another sidelb binary, measured as target 'before'")
    ap.add_argument("--show-headers", action="store_true", help="print the last decoded header blocks")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.before:
        names.append("before")
    for tool in ["h2load"] * (args.client == "h2load") + ["haproxy"] * ("haproxy" in names):
        if shutil.which(tool) is None:
            print("frame_count: %s not found (make deps installs it)" % tool)
            return 1
    results = []
    for n in names:
        results.append(measure(n, args.calls, args.warmup, args.payload, args.client, args.conns, args.streams,
                               binary=args.before if n == "before" else None, keep_headers=args.show_headers,
                               backend=args.backend, vary_deadline=args.vary_deadline, headers=args.header))
    if args.json:
        print(json.dumps(results, indent=1, default=repr))
        return 0
    print("frames per unary call, %d calls after %d warm-up, payload %d B, client %s%s, %s backend"
          % (args.calls, args.warmup, args.payload, args.client,
             " -c %d -m %d%s" % (args.conns, args.streams, "".join(", " + h for h in args.header))
            if args.client == "h2load" else
             (", deadlines vary" if args.vary_deadline else ", 30 s deadlines"), args.backend))
    print(format_table(results))
    if args.show_headers:
        for r in results:
            for d in (UP, DOWN):
                for size, hdrs in r["headers"][d]:
                    print("%s %s block %d B: %s" % (r["target"], d, size,
                                                    ", ".join("%s: %s" % (k.decode(), v.decode()) for k, v in hdrs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
