"""Unix-socket listeners ("address": "unix:/path"): grpcio apps dial
unix: targets; the socket file gets the configured mode and group; a stale
file left by a crash is replaced, a live socket or a file that is not a
socket is a clear error (and left alone); SIGHUP keeps the same socket (no
failed call during the reload); stop removes the file, only if it is still
sidelb's. The admin listener takes unix:/path too."""

import collections
import grp
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time

import pytest

import peers
from etcd_harness import EtcdServer
from peers import req
from sidelb_harness import start_sidelb, with_test_workers
from test_admin import read_all


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="sidelb-uds-")
    yield d
    shutil.rmtree(d, True)


def unix_config(path, backends, policy="round_robin", policy_options=None, **listener_extra):
    listener = {"name": "uds", "address": "unix:" + path,
                "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}
    listener.update(listener_extra)
    return {"listeners": [listener],
            "clusters": [{"name": "echo", "discovery": {"static": list(backends)},
                          "policy": {policy: policy_options or {}}}]}


def spread(stub, n=20):
    return collections.Counter(stub.Unary(req(payload=b"x"), timeout=5).backend_id for _ in range(n))


def other_group():
    """A group that is not this process's own, so chown is visible."""
    for g in grp.getgrall():
        if g.gr_gid != os.getgid():
            return g
    pytest.skip("no second group on this machine")


def start_failing(cfg):
    with pytest.raises(RuntimeError) as exc:
        start_sidelb(cfg, timeout=5)
    return str(exc.value)


def test_grpcio_calls_over_unix_socket_with_mode_and_group(sockdir):
    a, b = peers.start_c_backend("a"), peers.start_c_backend("b")
    path = os.path.join(sockdir, "grpc.sock")
    g = other_group()
    slb = start_sidelb(unix_config(path, [a.addr, b.addr], mode="0640", group=g.gr_name))
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == g.gr_gid
    assert spread(peers.echo_stub("unix:" + path)) == {"a": 10, "b": 10}
    assert "listening on unix:%s" % path in slb.log()


def test_default_mode_and_numeric_group(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    g = other_group()
    start_sidelb(unix_config(path, [a.addr], group=g.gr_gid))
    st = os.stat(path)
    assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == g.gr_gid
    assert spread(peers.echo_stub("unix:" + path), 3) == {"a": 3}


def test_hash_on_source_ip_keys_on_the_process(sockdir):
    """A UDS peer has no address: source_ip keys on the calling process (pid),
    so one app's calls stick to one backend and the loopback note is not logged."""
    backends = [peers.start_c_backend(n) for n in ("a", "b", "c")]
    path = os.path.join(sockdir, "grpc.sock")
    slb = start_sidelb(unix_config(path, [x.addr for x in backends], policy="ring_hash",
                                   policy_options={"hash_on": "source_ip"}))
    for _ in range(2):  # two channels (connections) of this one process: still one key
        got = spread(peers.echo_stub("unix:" + path), 10)
        assert len(got) == 1, got
    assert "loopback" not in slb.log()


def test_stale_socket_file_is_replaced(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # as after a crash: the file stays, nothing listens
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    slb = start_sidelb(unix_config(path, [a.addr]))
    assert "removed the stale socket file %s" % path in slb.log()
    assert spread(peers.echo_stub("unix:" + path), 3) == {"a": 3}


def test_live_socket_is_an_error_and_left_alone(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(16)
    try:
        msg = start_failing(unix_config(path, [a.addr]))
        assert "another process is listening on %s" % path in msg
        assert "exited with" in msg  # the daemon stopped, no hang
        # the other process's socket still works
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.close()
        # ... and a second sidelb on the same path is refused the same way
        first = start_sidelb(unix_config(os.path.join(sockdir, "other.sock"), [a.addr]))
        msg = start_failing(unix_config(os.path.join(sockdir, "other.sock"), [a.addr]))
        assert "another process is listening" in msg
        assert spread(peers.echo_stub("unix:" + os.path.join(sockdir, "other.sock")), 3) == {"a": 3}
        assert first.alive()
    finally:
        live.close()


def test_file_that_is_not_a_socket_is_never_removed(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    with open(path, "w") as f:
        f.write("precious")
    msg = start_failing(unix_config(path, [a.addr]))
    assert "%s exists and is not a socket (not removed)" % path in msg
    with open(path) as f:
        assert f.read() == "precious"


@pytest.mark.timeout(90)
def test_sighup_keeps_serving_on_the_socket(sockdir):
    """Calls run without pause through three reloads that switch backends and
    change the mode: none fails, the socket (inode) is the same one."""
    a, b = peers.start_c_backend("a"), peers.start_c_backend("b")
    path = os.path.join(sockdir, "grpc.sock")
    cfg = unix_config(path, [a.addr])
    slb = start_sidelb(cfg)
    ino = os.stat(path).st_ino
    stub = peers.echo_stub("unix:" + path)
    results = collections.Counter()
    failures = []
    stop = threading.Event()

    def load():
        ch = peers.channel("unix:" + path)  # new connections as well as calls on one
        while not stop.is_set():
            for s in (stub, peers.echo_stub(ch)):
                try:
                    results[s.Unary(req(payload=b"x"), timeout=5).backend_id] += 1
                except Exception as e:  # noqa: BLE001 - every failure counts
                    failures.append(repr(e))

    t = threading.Thread(target=load)
    t.start()
    try:
        for i, (backends, mode) in enumerate([([b.addr], "0600"), ([a.addr, b.addr], "0660"), ([a.addr], "0666")]):
            time.sleep(0.5)
            before = sum(results.values())
            with open(slb.config_path, "w") as f:
                json.dump(with_test_workers(unix_config(path, backends, mode=mode)), f)
            slb.signal(signal.SIGHUP)
            EtcdServer.wait_for(lambda: slb.log().count("reloaded") >= i + 1, 10, what="reload %d" % (i + 1))
            EtcdServer.wait_for(lambda: stat.S_IMODE(os.stat(path).st_mode) == int(mode, 8), 5, what="mode")
            EtcdServer.wait_for(lambda: sum(results.values()) > before + 20, 10, what="calls after the reload")
    finally:
        stop.set()
        t.join(10)
    assert not failures, failures[:5]
    assert results["a"] > 0 and results["b"] > 0
    assert os.stat(path).st_ino == ino
    assert slb.log().count("(kept)") == 3
    assert slb.alive()


def test_socket_removed_on_stop_only_if_still_ours(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    slb = start_sidelb(unix_config(path, [a.addr]))
    assert spread(peers.echo_stub("unix:" + path), 2) == {"a": 2}
    assert slb.stop() == 0
    assert not os.path.exists(path)
    # someone else's file at the path when sidelb stops is left alone
    slb2 = start_sidelb(unix_config(path, [a.addr]))
    os.unlink(path)
    with open(path, "w") as f:
        f.write("not sidelb's")
    assert slb2.stop() == 0
    with open(path) as f:
        assert f.read() == "not sidelb's"


def test_listener_dropped_by_reload_removes_its_file(sockdir):
    a = peers.start_c_backend("a")
    p1, p2 = os.path.join(sockdir, "one.sock"), os.path.join(sockdir, "two.sock")
    slb = start_sidelb(unix_config(p1, [a.addr]))
    with open(slb.config_path, "w") as f:
        json.dump(with_test_workers(unix_config(p2, [a.addr])), f)
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: "reloaded" in slb.log(), 10, what="the reload")
    EtcdServer.wait_for(lambda: not os.path.exists(p1), 10, what="the old socket file removed")
    assert spread(peers.echo_stub("unix:" + p2), 2) == {"a": 2}


def test_sighup_after_the_file_was_deleted_makes_a_new_socket(sockdir):
    a = peers.start_c_backend("a")
    path = os.path.join(sockdir, "grpc.sock")
    slb = start_sidelb(unix_config(path, [a.addr]))
    os.unlink(path)  # e.g. a careless cleanup of the runtime directory
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: "reloaded" in slb.log() or "reload:" in slb.log(), 10, what="the reload")
    assert "is no longer the running socket's file; binding a new socket" in slb.log()
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert spread(peers.echo_stub("unix:" + path), 3) == {"a": 3}
    assert slb.stop() == 0
    assert not os.path.exists(path)


def http_get_unix(path, target):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(("GET %s HTTP/1.1\r\nHost: sidelb\r\n\r\n" % target).encode())
    data = read_all(s)
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_admin_listener_on_a_unix_socket(sockdir):
    a = peers.start_c_backend("a")
    path, admin = os.path.join(sockdir, "grpc.sock"), os.path.join(sockdir, "admin.sock")
    cfg = unix_config(path, [a.addr])
    cfg["admin"] = {"address": "unix:" + admin}
    slb = start_sidelb(cfg)
    assert stat.S_IMODE(os.stat(admin).st_mode) == 0o660
    assert http_get_unix(admin, "/healthz") == (200, b"ok\n")
    spread(peers.echo_stub("unix:" + path), 2)
    status, body = http_get_unix(admin, "/clusters")
    assert status == 200 and json.loads(body)[0]["backends"][0]["address"] == a.addr
    # a reload hands the admin socket to the new server
    slb.signal(signal.SIGHUP)
    EtcdServer.wait_for(lambda: "reloaded" in slb.log(), 10, what="the reload")
    assert http_get_unix(admin, "/healthz") == (200, b"ok\n")
    assert slb.stop() == 0
    assert not os.path.exists(admin) and not os.path.exists(path)


def test_admin_unix_address_must_be_absolute(sockdir, tmp_path):
    f = tmp_path / "c.json"
    cfg = unix_config(os.path.join(sockdir, "grpc.sock"), ["127.0.0.1:1"])
    cfg["admin"] = {"address": "unix:admin.sock"}
    f.write_text(json.dumps(cfg))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "admin.address: invalid address \"unix:admin.sock\": the path after unix: must be absolute" in r.stderr


def test_access_log_names_the_calling_process(sockdir):
    a = peers.start_c_backend("a")
    path, log = os.path.join(sockdir, "grpc.sock"), os.path.join(sockdir, "access.log")
    cfg = unix_config(path, [a.addr])
    cfg["access_log"] = {"path": log}
    start_sidelb(cfg)
    spread(peers.echo_stub("unix:" + path), 2)

    def lines():
        try:
            with open(log) as f:
                return [json.loads(x) for x in f if x.strip()]
        except OSError:
            return []
    EtcdServer.wait_for(lambda: len(lines()) >= 2, 10, what="the access log lines")
    assert {x["peer"] for x in lines()} == {"unix:pid=%d" % os.getpid()}
    assert {x["listener"] for x in lines()} == {"uds"}
