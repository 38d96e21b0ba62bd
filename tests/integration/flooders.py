"""Raw HTTP/2 apps that misbehave, for the budget and fairness tests.

    Uploader(port, n, ...)   opens n Bidi calls whose first message makes the
        backend stall (delay_ms), then keeps sending request messages on every
        stream as fast as sidelb's flow-control windows allow; .accepted is the
        number of body bytes sidelb took.
    frame_flood(port, seconds, result, pings=False)  a WINDOW_UPDATE (+ PING)
        flood on one connection: cheap frames sidelb must parse one by one.
"""

import select
import socket
import struct
import threading
import time

import h2.config
import h2.settings
import h2.connection
import h2.events
import h2.exceptions

from peers import req


def grpc_frame(msg):
    body = msg.SerializeToString()
    return struct.pack(">BI", 0, len(body)) + body


def _headers(path):
    return [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path), (b":authority", b"sidelb"),
            (b"content-type", b"application/grpc"), (b"te", b"trailers")]


class Uploader(threading.Thread):
    def __init__(self, port, n, delay_ms=60000, path=b"/sidelb.test.Echo/Bidi", message_size=60000, response_size=1):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        self.first = grpc_frame(req(payload=b"f", delay_ms=delay_ms))
        self.message = grpc_frame(req(payload=b"u" * message_size, response_size=response_size))
        self.sids = []
        for _ in range(n):
            sid = self.conn.get_next_available_stream_id()
            self.conn.send_headers(sid, _headers(path))
            self.conn.send_data(sid, self.first)
            self.sids.append(sid)
        self.offset = dict.fromkeys(self.sids, 0)
        self.accepted = 0
        self.last_progress = time.monotonic()
        self.stop = False
        self.error = None
        self.sock.sendall(self.conn.data_to_send())

    def run(self):
        try:
            while not self.stop:
                sent = 0
                for sid in self.sids:
                    try:
                        room = min(self.conn.local_flow_control_window(sid), 16384)
                    except (h2.exceptions.StreamClosedError, KeyError):
                        continue
                    while room > 0:
                        off = self.offset[sid]
                        chunk = self.message[off:off + room]
                        self.conn.send_data(sid, chunk)
                        self.offset[sid] = (off + len(chunk)) % len(self.message)
                        sent += len(chunk)
                        room = min(self.conn.local_flow_control_window(sid), 16384)
                out = self.conn.data_to_send()
                if out:
                    self.sock.sendall(out)
                if sent:
                    self.accepted += sent
                    self.last_progress = time.monotonic()
                if select.select([self.sock], [], [], 0 if sent else 0.05)[0]:
                    data = self.sock.recv(1 << 20)
                    if not data:
                        self.error = "closed"
                        return
                    for ev in self.conn.receive_data(data):
                        if isinstance(ev, h2.events.DataReceived):  # take the replies
                            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    out = self.conn.data_to_send()
                    if out:
                        self.sock.sendall(out)
        except (OSError, h2.exceptions.ProtocolError) as e:
            self.error = repr(e)

    def wait_stalled(self, quiet=1.0, timeout=60):
        """Until sidelb took nothing more for `quiet` seconds."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and time.monotonic() - self.last_progress < quiet and self.error is None:
            time.sleep(0.1)

    def close(self):
        self.stop = True
        self.join(5)
        self.sock.close()


def frame_flood(port, seconds, result, pings=False):
    """Cheap frames as fast as the socket takes them: WINDOW_UPDATE(+1) on the
    connection (and PINGs), reading (and dropping) what sidelb answers."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    wu = struct.pack(">I", 4)[1:] + b"\x08\x00" + struct.pack(">I", 0) + struct.pack(">I", 1)
    ping = struct.pack(">I", 8)[1:] + b"\x06\x00" + struct.pack(">I", 0) + b"12345678"
    blob = (wu * 40 + (ping if pings else b"")) * 200  # ~110 KB: 8,000 WINDOW_UPDATEs (and 200 PINGs)
    end = time.monotonic() + seconds
    result["bytes"] = 0
    try:
        while time.monotonic() < end:
            sock.sendall(blob)
            result["bytes"] += len(blob)
            while select.select([sock], [], [], 0)[0]:
                if not sock.recv(1 << 20):
                    result["closed"] = True
                    return
    except OSError as e:
        result["closed"] = repr(e)
    finally:
        sock.close()
