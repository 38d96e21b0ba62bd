"""Real gRPC peers for sidelb's integration tests (run with /usr/bin/python3).

Nothing generated is checked in: importing this module compiles
proto/echo.proto and proto/health.proto with grpc_tools.protoc into a temp
dir (once per process) and exposes the modules:

    echo_pb2, echo_grpc        sidelb.test.Echo messages / EchoStub
    health_pb2, health_grpc    grpc.health.v1 messages / HealthStub

Processes (every Proc is registered; stop_all() stops them all, conftest.py
calls it after each test, even a failing one):

    Proc(argv, name=None, ready=r"^ready (\\d+)", port=None, timeout=10, env=None)
        Starts argv with stdout+stderr to a temp log file and waits until a
        log line matches `ready` (its first group, if any, becomes .port) or,
        when `port` is given and ready=None, until that TCP port accepts.
        Raises RuntimeError (with the log) if it exits or times out first.
        .pid .port .addr ("127.0.0.1:port") .log() .alive() .wait(timeout)
        .signal(sig) .stop(timeout=5) (SIGTERM, then SIGKILL; returns the exit
        code) .kill9() (crash) .restart() (same argv, same port)
        .remove_files() (log, stats, sidelb_harness's config)
    stop_all(since=0)  stops the registered Procs (newest first), returns them

    start_c_backend(id, port=None, extra_args=(), stats=True) -> Backend (a Proc)
        $SIDELB_BUILD/test_backend --port P --id ID --stats-file F [extra]
        port=None lets the backend pick a free one (no race). stats=False
        for benchmarks (the stats file is rewritten after every call).
    start_py_backend(id, port=None, extra_args=())  -> Backend
        echo_server.py, the grpcio twin with the same semantics and options
        (--health, --health-unimplemented-watch, --stats-file); also
        --no-health (no grpc.health.v1) and --health-delay-ms N.
    Backend.stats()  the backend's stats JSON (dict): calls, ok, failed,
        cancelled, active, connections, by_method, cancelled_by_method.
    Backend.wait_stats(pred, timeout=5)  polls stats() until pred(stats).
    Backend.stats_now()  stats() after a SIGHUP made the backend write them: counts
        calls still open ("active"), which the file otherwise shows only once a call ends.
    Backend.set_health(serving: bool)    SIGUSR2 / SIGUSR1.

Helpers:
    BUILD                 $SIDELB_BUILD or <repo>/build
    binary(name)          BUILD/name, checked to exist
    free_port()           a currently free 127.0.0.1 port (racy; prefer port=None), below the
                          ephemeral range and from this xdist worker's own share
    wait_port(port, timeout=10) -> bool
    wait_for(pred, timeout=5, interval=0.05, what="condition") -> seconds waited
                          polls pred() until true; AssertionError naming `what` after timeout
    RateLoad(stub, rate, timeout)  unary calls at a steady rate from a thread;
                          .stop() -> [(issued, done, backend_id or status name)]
    RawServer             a raw TCP server on 127.0.0.1 (accept thread, one thread per
                          connection running .serve(conn)); for peers that break protocols
    channel(addr, **opts) grpc.insecure_channel with 64 MiB message limits
    echo_stub(addr_or_channel), health_stub(addr_or_channel)
    req(**fields)         echo_pb2.EchoRequest(**fields)
    GRPC_CODES            {int: grpc.StatusCode}

Echo semantics of both backends (proto/echo.proto): reply payload = request
payload or response_size bytes; delay_ms before replying; status_code /
status_message end the call with that status; backend_id = --id;
ServerStream sends response_count replies with seq 0..n-1; ClientStream one
reply after half-close (shaped by the last request, received = count); Bidi
one reply per request. Request metadata named x-* comes back as initial
metadata unchanged and as trailing metadata named x-trailer-<name>.
"""

import atexit
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import grpc

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SIDELB_BUILD") or os.path.join(REPO_ROOT, "build")
PYTHON = "/usr/bin/python3"
HERE = os.path.dirname(os.path.abspath(__file__))
MAX_MSG = 64 * 1024 * 1024

_GEN_DIR = None


def _generate():
    """Compiles the protos once per process; returns the output dir."""
    global _GEN_DIR
    if _GEN_DIR:
        return _GEN_DIR
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="sidelb-pb2-")
    proto_dir = os.path.join(REPO_ROOT, "proto")
    inc = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", "-I" + proto_dir, "--python_out=" + out, "--grpc_python_out=" + out]
    if os.path.isdir(inc):
        args.append("-I" + inc)
    rc = protoc.main(args + ["echo.proto", "health.proto"])
    if rc != 0:
        raise RuntimeError("grpc_tools.protoc failed (%d) on %s" % (rc, proto_dir))
    sys.path.insert(0, out)
    atexit.register(shutil.rmtree, out, True)
    _GEN_DIR = out
    return out


_generate()
import echo_pb2  # noqa: E402
import echo_pb2_grpc as echo_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc as health_grpc  # noqa: E402

GRPC_CODES = {c.value[0]: c for c in grpc.StatusCode}

_procs = []


def binary(name):
    path = os.path.join(BUILD, name)
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s not built (SIDELB_BUILD=%s); run make %s/%s" % (path, BUILD, BUILD, name))
    return path


# free_port() hands out ports below the kernel's ephemeral range, so no bind(0)
# or outgoing connection (of this or any other test process) can take one
# between free_port() and the bind it was picked for; and each pytest-xdist
# worker (PYTEST_XDIST_WORKER=gwN) walks its own share of them, so workers
# running side by side never pick the same port. The walk starts at a random
# place: another test run on the same machine starts elsewhere, and a port
# still in use (bind fails) is skipped.
_PORT_LOW = 10000
_PORT_SHARES = 16  # the plain (no xdist) run and workers gw0..gw14
_port_walk = None


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_share():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        return (int(worker[2:]) + 1) % _PORT_SHARES
    return 0


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    global _port_walk
    count = (_ephemeral_low() - _PORT_LOW) // _PORT_SHARES
    if count < 64:  # an unusual ip_local_port_range: let the kernel pick
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    if _port_walk is None:
        _port_walk = int.from_bytes(os.urandom(4), "little")
    for _ in range(count):
        port = _PORT_LOW + _port_share() + _PORT_SHARES * (_port_walk % count)
        _port_walk += 1
        if _bindable(port):
            return port
    raise RuntimeError("no free port in this worker's share below %d" % _ephemeral_low())


def wait_for(pred, timeout=5.0, interval=0.05, what="condition"):
    start = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError("%s not reached within %.1fs" % (what, timeout))
        time.sleep(interval)


class RateLoad:
    """Unary Echo calls at `rate` per second from a thread, each with a
    `timeout` s deadline, recorded in .results as (issued, done, backend_id
    or status code name); stop() waits for every outcome and returns them."""

    def __init__(self, stub, rate, timeout):
        self.stub, self.rate, self.timeout = stub, rate, timeout
        self.results = []
        self.lock = threading.Lock()
        self.futs = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _done(self, issued):
        def cb(f):
            now = time.monotonic()
            try:
                what = f.result().backend_id
            except grpc.RpcError as e:
                what = e.code().name
            with self.lock:
                self.results.append((issued, now, what))
        return cb

    def _run(self):
        t0 = time.monotonic()
        i = 0
        while not self.stopped.is_set():
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            f = self.stub.Unary.future(req(payload=b"%d" % i), timeout=self.timeout)
            f.add_done_callback(self._done(time.monotonic()))
            self.futs.append(f)
            i += 1

    def stop(self):
        """Stops issuing and waits for every call's outcome."""
        self.stopped.set()
        self.thread.join(5)
        end = time.monotonic() + self.timeout + 5
        while time.monotonic() < end:
            with self.lock:
                if len(self.results) == len(self.futs):
                    return list(self.results)
            time.sleep(0.02)
        raise AssertionError("calls never finished")


class RawServer:
    """Listens on 127.0.0.1 (a free port); each accepted connection runs
    self.serve(conn) on its own daemon thread. close() stops accepting and
    closes every connection. Subclasses implement serve()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.stopped = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, conn):
        raise NotImplementedError


def wait_port(port, timeout=10.0):
    """True once 127.0.0.1:port accepts a TCP connection, False on timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class Proc:
    """A child process with its log in a temp file, stopped by PID."""

    def __init__(self, argv, name=None, ready=r"^ready (\d+)", port=None, timeout=10.0, env=None, cwd=None):
        self.argv = [str(a) for a in argv]
        self.name = name or os.path.basename(self.argv[0])
        self.ready = ready
        self.port = port
        self.env = env
        self.cwd = cwd
        self.timeout = timeout
        fd, self.log_path = tempfile.mkstemp(prefix="sidelb-%s-" % self.name, suffix=".log")
        os.close(fd)
        self.popen = None
        _procs.append(self)
        self._start()

    def _start(self):
        self._logf = open(self.log_path, "ab")
        self._log_start = self._logf.tell()
        self.popen = subprocess.Popen(self.argv, stdout=self._logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd,
                                      start_new_session=True)
        self._wait_ready()

    def _wait_ready(self):
        end = time.monotonic() + self.timeout
        pat = re.compile(self.ready, re.M) if self.ready else None
        while time.monotonic() < end:
            if pat:
                with open(self.log_path, "rb") as f:
                    f.seek(self._log_start)
                    m = pat.search(f.read().decode("utf-8", "replace"))
                if m:
                    if m.groups():
                        self.port = int(m.group(1))
                    return
            elif self.port and wait_port(self.port, 0.1):
                return
            elif not self.port:
                return
            if self.popen.poll() is not None:
                raise RuntimeError("%s exited with %s before ready:\n%s" % (self.name, self.popen.returncode,
                                                                          self.log()))
            time.sleep(0.01)
        self.kill9()
        raise RuntimeError("%s not ready after %.1fs:\n%s" % (self.name, self.timeout, self.log()))

    @property
    def pid(self):
        return self.popen.pid

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=None):
        return self.popen.wait(timeout)

    def stop(self, timeout=5.0):
        """SIGTERM, then SIGKILL after timeout; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._logf.close()
        return self.popen.returncode

    def kill9(self):
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.popen.wait(5)
        self._logf.close()

    def restart(self):
        """Starts the same command again (after stop/kill9) on the same port."""
        if self.alive():
            self.stop()
        self.argv = self._restart_argv()
        self._start()
        return self

    def _restart_argv(self):
        return self.argv

    def remove_files(self):
        """Deletes the log (and stats, and sidelb_harness's config) files; conftest
        does it after a passing test."""
        for path in (self.log_path, getattr(self, "stats_file", None), getattr(self, "config_path", None)):
            for p in (path, path and path + ".tmp"):
                try:
                    if p:
                        os.unlink(p)
                except OSError:
                    pass

    def __repr__(self):
        return "<Proc %s pid=%s port=%s>" % (self.name, self.popen and self.popen.pid, self.port)


class Backend(Proc):
    """A test backend (C or Python) with a stats file."""

    def __init__(self, argv, id, stats_file, **kw):
        self.id = id
        self.stats_file = stats_file
        super().__init__(argv, name="backend-" + id, **kw)

    def _restart_argv(self):
        argv = list(self.argv)
        i = argv.index("--port")
        argv[i + 1] = str(self.port)  # keep the port the first run picked
        return argv

    def stats(self):
        if not self.stats_file:
            return {}
        try:
            with open(self.stats_file) as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return {}

    def stats_now(self, timeout=2.0):
        """stats() as of now, calls still open included: both backends rewrite
        the file (a new inode: write then rename) when a call ends and on
        SIGHUP, so this sends SIGHUP and reads the file once it was replaced."""
        def inode():
            try:
                return os.stat(self.stats_file).st_ino
            except OSError:
                return None
        before = inode()
        self.signal(signal.SIGHUP)
        end = time.monotonic() + timeout
        while inode() == before and time.monotonic() < end:
            time.sleep(0.01)
        return self.stats()

    def wait_stats(self, pred, timeout=5.0):
        end = time.monotonic() + timeout
        while True:
            st = self.stats()
            if st and pred(st):
                return st
            if time.monotonic() > end:
                raise AssertionError("backend %s stats never matched: %r" % (self.id, st))
            time.sleep(0.02)

    def set_health(self, serving):
        self.signal(signal.SIGUSR2 if serving else signal.SIGUSR1)


def _stats_path(id):
    fd, path = tempfile.mkstemp(prefix="sidelb-stats-%s-" % id, suffix=".json")
    os.close(fd)
    return path


def start_c_backend(id, port=None, extra_args=(), timeout=10.0, stats=True):
    """stats=False: no --stats-file (it rewrites a file after every call; off for benchmarks)."""
    stats = _stats_path(id) if stats else None
    argv = [binary("test_backend"), "--port", str(port or 0), "--id", id]
    if stats:
        argv += ["--stats-file", stats]
    return Backend(argv + list(extra_args), id, stats, timeout=timeout)


def start_py_backend(id, port=None, extra_args=(), timeout=20.0):
    stats = _stats_path(id)
    argv = [PYTHON, os.path.join(HERE, "echo_server.py"), "--port", str(port or 0), "--id", id,
            "--stats-file", stats]
    return Backend(argv + list(extra_args), id, stats, timeout=timeout)


def stop_all(since=0):
    """Stops every Proc started in this process (from index `since` of the
    registry), newest first; returns them."""
    stopped = []
    while len(_procs) > since:
        p = _procs.pop()
        try:
            p.stop()
        except Exception:  # keep stopping the others
            try:
                p.kill9()
            except Exception:
                pass
        stopped.append(p)
    return stopped


def channel(addr, **opts):
    options = [("grpc.max_send_message_length", MAX_MSG), ("grpc.max_receive_message_length", MAX_MSG)]
    options += list(opts.items())
    return grpc.insecure_channel(addr, options=options)


def _chan(x):
    return channel(x) if isinstance(x, str) else x


def echo_stub(addr_or_channel):
    return echo_grpc.EchoStub(_chan(addr_or_channel))


def health_stub(addr_or_channel):
    return health_grpc.HealthStub(_chan(addr_or_channel))


def req(**fields):
    return echo_pb2.EchoRequest(**fields)
