#!/usr/bin/python3
"""grpcio twin of tests/backend/test_backend (same Echo/Health semantics).

    echo_server.py --port N [--id NAME] [--health SERVING|NOT_SERVING]
                   [--health-unimplemented-watch] [--no-health] [--health-delay-ms N]
                   [--stats-file PATH] [--workers N]
                   [--tls-cert PEM --tls-key PEM [--tls-client-ca PEM]]

--no-health: no grpc.health.v1 service at all (like the grpc-go interop
server: Watch and Check answer UNIMPLEMENTED). --health-delay-ms N: every
Check, and the first answer of every Watch, comes N ms late.

Prints "ready <port>" once serving (--port 0 picks one). SIGUSR1 ->
NOT_SERVING, SIGUSR2 -> SERVING, SIGHUP writes stats, SIGTERM writes stats
and stops. The stats file has the C backend's JSON shape.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import grpc  # noqa: E402
import peers  # noqa: E402

pb, pbg, hpb, hpbg = peers.echo_pb2, peers.echo_grpc, peers.health_pb2, peers.health_grpc
METHODS = ["unknown", "Unary", "ServerStream", "ClientStream", "Bidi", "HealthCheck", "HealthWatch"]


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.health = hpb.HealthCheckResponse.SERVING if args.health == "SERVING" else \
            hpb.HealthCheckResponse.NOT_SERVING
        self.calls = self.ok = self.failed = self.cancelled = self.active = 0
        self.by_method = dict.fromkeys(METHODS, 0)
        self.cancelled_by_method = dict.fromkeys(METHODS, 0)

    def write_stats(self):
        path = self.args.stats_file
        if not path:
            return
        with self.lock:
            d = {"id": self.args.id, "calls": self.calls, "ok": self.ok, "failed": self.failed,
                 "cancelled": self.cancelled, "active": self.active, "connections": 0,
                 "by_method": dict(self.by_method), "cancelled_by_method": dict(self.cancelled_by_method)}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps(d) + "\n")
        os.replace(tmp, path)

    def set_health(self, status):
        with self.cond:
            if self.health == status:
                return
            self.health = status
            self.cond.notify_all()


def tracked(method):
    """Counts the call and notices a cancel (the RPC ends before the handler)."""
    def wrap(fn):
        def handler(self, request, context):
            st = self.st
            done = [False]
            with st.lock:
                st.calls += 1
                st.active += 1
                st.by_method[method] += 1

            def on_end():
                with st.lock:
                    st.active -= 1
                    if not done[0]:
                        st.cancelled += 1
                        st.cancelled_by_method[method] += 1
                        sys.stderr.write("echo_server %s: cancelled %s\n" % (st.args.id, method))
                        sys.stderr.flush()
                st.write_stats()

            context.add_callback(on_end)
            result = fn(self, request, context)
            if hasattr(result, "__next__"):
                return list_then_mark(result, done, st)
            mark(done, st, context)
            return result
        return handler
    return wrap


def mark(done, st, context):
    done[0] = True
    with st.lock:
        if getattr(context, "_tb_status", 0) == 0:
            st.ok += 1
        else:
            st.failed += 1


def list_then_mark(gen, done, st):
    # Streaming handlers: completion is when the generator is exhausted.
    def g():
        ctx = None
        for item in gen:
            if isinstance(item, tuple):  # (None, context): status set, stop
                ctx = item[1]
                break
            yield item
        done[0] = True
        with st.lock:
            if ctx is not None and getattr(ctx, "_tb_status", 0):
                st.failed += 1
            else:
                st.ok += 1
    return g()


def echo_metadata(context):
    md = [(k, v) for k, v in context.invocation_metadata() if k.startswith("x-")]
    if md:
        context.send_initial_metadata(md)
        context.set_trailing_metadata([("x-trailer-" + k, v) for k, v in md])


def sleep_ms(context, ms):
    end = time.monotonic() + ms / 1000.0
    while context.is_active():
        left = end - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, 0.01))
    return False


def set_status(context, request):
    context._tb_status = request.status_code
    if request.status_code:
        context.set_code(peers.GRPC_CODES[request.status_code])
    if request.status_message:
        context.set_details(request.status_message)


class Echo(pbg.EchoServicer):
    def __init__(self, st):
        self.st = st

    def reply(self, request, seq=0, received=0):
        payload = request.payload
        if request.response_size:
            payload = bytes((ord("a") + i % 26) for i in range(26)) * (request.response_size // 26 + 1)
            payload = payload[:request.response_size]
        return pb.EchoReply(payload=payload, backend_id=self.st.args.id, seq=seq, received=received)

    @tracked("Unary")
    def Unary(self, request, context):
        echo_metadata(context)
        sleep_ms(context, request.delay_ms)
        set_status(context, request)
        if request.status_code:
            return pb.EchoReply()
        return self.reply(request, 0, 1)

    @tracked("ServerStream")
    def ServerStream(self, request, context):
        echo_metadata(context)
        sleep_ms(context, request.delay_ms)
        n = request.response_count or (0 if request.status_code else 1)
        for i in range(n):
            if not context.is_active():
                return
            yield self.reply(request, i, 1)
        set_status(context, request)
        if request.status_code:
            yield (None, context)

    @tracked("ClientStream")
    def ClientStream(self, request_iterator, context):
        echo_metadata(context)
        last, count = pb.EchoRequest(), 0
        for r in request_iterator:
            last, count = r, count + 1
        sleep_ms(context, last.delay_ms)
        set_status(context, last)
        if last.status_code:
            return pb.EchoReply()
        return self.reply(last, 0, count)

    @tracked("Bidi")
    def Bidi(self, request_iterator, context):
        echo_metadata(context)
        count = 0
        for r in request_iterator:
            count += 1
            sleep_ms(context, r.delay_ms)
            if r.status_code:
                set_status(context, r)
                yield (None, context)
                return
            yield self.reply(r, count - 1, count)


class Health(hpbg.HealthServicer):
    def __init__(self, st):
        self.st = st

    @tracked("HealthCheck")
    def Check(self, request, context):
        time.sleep(self.st.args.health_delay_ms / 1000.0)
        with self.st.lock:
            return hpb.HealthCheckResponse(status=self.st.health)

    @tracked("HealthWatch")
    def Watch(self, request, context):
        if self.st.args.health_unimplemented_watch:
            context.set_code(grpc.StatusCode.UNIMPLEMENTED)
            context.set_details("Watch is not implemented here")
            context._tb_status = 12
            yield (None, context)
            return
        time.sleep(self.st.args.health_delay_ms / 1000.0)
        last = None
        while context.is_active():
            with self.st.cond:
                if self.st.health == last:
                    self.st.cond.wait(0.05)
                    continue
                last = self.st.health
            yield hpb.HealthCheckResponse(status=last)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--id", default="echo_server")
    ap.add_argument("--health", default="SERVING", choices=["SERVING", "NOT_SERVING"])
    ap.add_argument("--health-unimplemented-watch", action="store_true")
    ap.add_argument("--no-health", action="store_true")
    ap.add_argument("--health-delay-ms", type=int, default=0)
    ap.add_argument("--stats-file")
    ap.add_argument("--workers", type=int, default=64)
    ap.add_argument("--tls-cert", help="serve TLS with this certificate chain (PEM) and --tls-key")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require client certificates signed by these CAs (mTLS)")
    args = ap.parse_args()

    st = State(args)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_send_message_length", peers.MAX_MSG),
                                  ("grpc.max_receive_message_length", peers.MAX_MSG),
                                  ("grpc.so_reuseport", 0)])
    pbg.add_EchoServicer_to_server(Echo(st), server)
    if not args.no_health:
        hpbg.add_HealthServicer_to_server(Health(st), server)
    if args.tls_cert:
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        creds = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=read(args.tls_client_ca) if args.tls_client_ca else None,
            require_client_auth=bool(args.tls_client_ca))
        port = server.add_secure_port("127.0.0.1:%d" % args.port, creds)
    else:
        port = server.add_insecure_port("127.0.0.1:%d" % args.port)
    if port == 0:
        sys.stderr.write("echo_server: cannot listen on 127.0.0.1:%d\n" % args.port)
        return 1
    server.start()
    stop = threading.Event()

    def on_signal(signum, frame):
        if signum == signal.SIGUSR1:
            st.set_health(hpb.HealthCheckResponse.NOT_SERVING)
        elif signum == signal.SIGUSR2:
            st.set_health(hpb.HealthCheckResponse.SERVING)
        elif signum == signal.SIGHUP:
            st.write_stats()
        else:
            stop.set()

    for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    st.write_stats()
    print("ready %d" % port, flush=True)
    while not stop.wait(0.5):
        pass
    st.write_stats()
    server.stop(0.2).wait(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
