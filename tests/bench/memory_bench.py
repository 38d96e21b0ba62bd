#!/usr/bin/python3
"""Memory per downstream connection: sidelb RSS with 1000 idle h2c connections,
then after one call on each. A benchmark, not a test:
    SIDELB_BUILD=build /usr/bin/python3 tests/bench/memory_bench.py
"""
import sys, time, socket; import os; sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'integration'))
import peers
from peers import req
from sidelb_harness import simple_config, start_sidelb, rss_kb
import h2.connection, h2.config
be = peers.start_c_backend("m")
slb = start_sidelb(simple_config([be.addr]), log_level="warn")
stub = peers.echo_stub(slb.addr); stub.Unary(req(payload=b"x"), timeout=5)
time.sleep(0.3)
base = rss_kb(slb.pid)
socks = []
N = 1000
for i in range(N):
    s = socket.create_connection(("127.0.0.1", slb.port))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection(); s.sendall(c.data_to_send())
    socks.append((s, c))
time.sleep(3.0)  # idle app connections give their pages back after 1 s (the 1 s sweep)
idle = rss_kb(slb.pid)
# one call on each connection, then idle again
for s, c in socks:
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method","POST"),(":scheme","http"),(":path","/sidelb.test.Echo/Unary"),(":authority","x"),("content-type","application/grpc"),("te","trailers")])
    body = req(payload=b"x").SerializeToString()
    import struct
    c.send_data(sid, struct.pack(">BI",0,len(body))+body, end_stream=True)
    s.sendall(c.data_to_send())
time.sleep(3.0)
used = rss_kb(slb.pid)
print("RSS base %d KiB; +%d idle h2 connections: +%.1f KiB/conn; after one call on each: +%.1f KiB/conn" % (base, N, (idle-base)/N, (used-base)/N))
for s, c in socks: s.close()
peers.stop_all()
