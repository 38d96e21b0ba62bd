"""A real etcd-server for integration tests (Debian etcd-server, /usr/bin/etcd).

    EtcdServer(start=True, timeout=20)
        one member on free 127.0.0.1 client/peer ports, data in a temp dir.
        The process is a peers.Proc, so conftest stops it after the test (by PID,
        pass or fail); the data dir is removed by stop()/kill9() and at exit.
        .url ("http://127.0.0.1:P"), .port, .pid
        .start()          (again after stop/kill9: same ports, same data dir)
        .stop()           SIGTERM, then SIGKILL; keeps the data dir for a restart
        .kill9()          crash
        .destroy()        stop + remove the data dir
    Blocking helpers through the v3 JSON gateway (urllib, base64 keys):
        .put(key, value, lease=0)  .get(key) -> value str or None
        .get_kv(key) -> dict (value, lease:int, ...) or None
        .range_prefix(prefix) -> {key: value}
        .delete(key, prefix=False) -> number deleted
        .lease_ttl(lease_id) -> (ttl, granted_ttl); ttl -1 = lease gone
        .wait_for(pred, timeout, interval=0.05) -> elapsed seconds (raises AssertionError)
"""

import atexit
import base64
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request

import peers

ETCD = "/usr/bin/etcd"


def _b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def _unb64(s):
    return base64.b64decode(s).decode("utf-8", "replace")


def _prefix_end(prefix):
    b = bytearray(prefix.encode())
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"
    b[-1] += 1
    return bytes(b)


def _free_port():
    return peers.free_port()  # its scheme keeps pytest-xdist workers apart


class EtcdServer:
    def __init__(self, start=True, timeout=20.0, name="m0"):
        self.name = name
        self.timeout = timeout
        self.dir = tempfile.mkdtemp(prefix="sidelb-etcd-py-")
        atexit.register(shutil.rmtree, self.dir, True)
        self.port = _free_port()
        self.peer_port = _free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = None
        if start:
            self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def _argv(self):
        purl = "http://127.0.0.1:%d" % self.peer_port
        return [ETCD, "--name", self.name, "--data-dir", self.dir + "/data",
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
                "--initial-cluster", "%s=%s" % (self.name, purl), "--initial-cluster-token", "sidelb-py-test",
                "--initial-cluster-state", "new"]

    def start(self):
        self.proc = peers.Proc(self._argv(), name="etcd", ready=None, port=self.port, timeout=self.timeout)
        end = time.monotonic() + self.timeout
        while True:
            try:
                self._post("/v3/kv/range", {"key": _b64("__ready")}, timeout=1.0)
                return self
            except (OSError, urllib.error.URLError):
                if time.monotonic() > end or not self.proc.alive():
                    raise RuntimeError("etcd not ready:\n" + self.proc.log()[-3000:])
                time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.alive()

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill9(self):
        if self.proc:
            self.proc.kill9()

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, True)

    # ---- JSON gateway ----

    def _post(self, path, body, timeout=3.0):
        data = json.dumps(body).encode()
        rq = urllib.request.Request(self.url + path, data=data, method="POST",
                                    headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(rq, timeout=timeout) as r:
            return json.loads(r.read().decode() or "{}")

    def put(self, key, value, lease=0):
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self._post("/v3/kv/put", body)

    def get_kv(self, key):
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        if not kvs:
            return None
        kv = kvs[0]
        return {"key": _unb64(kv["key"]), "value": _unb64(kv.get("value", "")),
                "lease": int(kv.get("lease", "0")), "version": int(kv.get("version", "0"))}

    def get(self, key):
        kv = self.get_kv(key)
        return kv["value"] if kv else None

    def range_prefix(self, prefix):
        r = self._post("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))})
        return {_unb64(kv["key"]): _unb64(kv.get("value", "")) for kv in r.get("kvs", [])}

    def delete(self, key, prefix=False):
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _b64(_prefix_end(key))
        return int(self._post("/v3/kv/deleterange", body).get("deleted", "0"))

    def lease_ttl(self, lease):
        r = self._post("/v3/lease/timetolive", {"ID": str(lease)})
        return int(r.get("TTL", "0")), int(r.get("grantedTTL", "0"))

    wait_for = staticmethod(peers.wait_for)
