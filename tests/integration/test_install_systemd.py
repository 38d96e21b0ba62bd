"""Operations around the daemon: `make install` into a DESTDIR (what is
installed, never overwriting a config, the library only when asked),
`systemd-analyze verify` on the installed unit, the systemd watchdog
(WATCHDOG=1 on a real unix datagram socket, stopping when the loop is
stopped), and the etcd password rules (password_file against a real etcd
with auth, http:// refused unless allowed)."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

import peers
from sidelb_harness import simple_config, start_sidelb

REPO = peers.REPO_ROOT
BUILD = os.path.dirname(peers.binary("sidelb"))


def make_install(*args):
    # -o: install what the test runs (a sanitizer build too), never rebuild it with other flags
    r = subprocess.run(["make", "-s", "-C", REPO, "BUILD=%s" % BUILD, "-o", os.path.join(BUILD, "sidelb"),
                        "-o", os.path.join(BUILD, "libsidelb.a")] + list(args), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def files_under(root):
    out = set()
    for d, _, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


def test_install_into_destdir(tmp_path):
    dest = tmp_path / "root"
    make_install("install", "DESTDIR=%s" % dest, "PREFIX=/usr/local")
    assert files_under(dest) == {
        "usr/local/bin/sidelb",
        "usr/local/lib/systemd/system/sidelb.service",
        "usr/local/share/man/man8/sidelb.8",
        "usr/local/share/man/man5/sidelb.json.5",
        "etc/sidelb/sidelb.json",
        "etc/sidelb/sidelb.json.example",
    }  # no libsidelb.a unless asked
    assert os.access(dest / "usr/local/bin/sidelb", os.X_OK)
    unit = (dest / "usr/local/lib/systemd/system/sidelb.service").read_text()
    assert "ExecStart=/usr/local/bin/sidelb -c /etc/sidelb/sidelb.json" in unit
    assert "@BINDIR@" not in unit and "@SYSCONFDIR@" not in unit
    assert "WatchdogSec=" in unit and "MemoryMax=" in unit and "MemoryHigh=" in unit
    # the installed config is valid, and a second install keeps an edited one
    r = subprocess.run([str(dest / "usr/local/bin/sidelb"), "--check-config", str(dest / "etc/sidelb/sidelb.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (dest / "etc/sidelb/sidelb.json").write_text('{"edited": true}\n')
    out = make_install("install", "DESTDIR=%s" % dest, "PREFIX=/usr/local")
    assert "keeping the existing" in out
    assert (dest / "etc/sidelb/sidelb.json").read_text() == '{"edited": true}\n'
    # the library and its headers only when asked
    make_install("install", "DESTDIR=%s" % dest, "PREFIX=/usr/local", "INSTALL_LIB=1")
    assert (dest / "usr/local/lib/libsidelb.a").exists()
    assert (dest / "usr/local/include/sidelb/server.h").exists()


def test_systemd_analyze_verify_passes_on_the_installed_unit(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (Makefile DEB_TEST has systemd)")
    # a real prefix (no DESTDIR) so the unit's paths exist for verify
    prefix, etc = tmp_path / "usr", tmp_path / "etc"
    make_install("install", "PREFIX=%s" % prefix, "SYSCONFDIR=%s" % etc)
    unit = prefix / "lib/systemd/system/sidelb.service"
    assert "ExecStart=%s/bin/sidelb -c %s/sidelb/sidelb.json" % (prefix, etc) in unit.read_text()
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    # the only lines allowed are about the host's own units, never ours
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "sidelb" in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)

    def messages(self, seconds):
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                out.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass
        return out

    def wait_for(self, text, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                if self.sock.recv(4096).decode() == text:
                    return True
            except socket.timeout:
                pass
        return False

    def close(self):
        self.sock.close()


def start_notified(path, watchdog_usec):
    b = peers.start_c_backend("w0")
    cfg = simple_config([b.addr])
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC=str(watchdog_usec))
    old = os.environ.copy()
    os.environ.update(env)  # start_sidelb passes the environment on
    try:
        return start_sidelb(cfg)
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_watchdog_pings_from_the_loop_and_stop_when_it_stops(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    try:
        slb = start_notified(ns.path, 400000)  # 400 ms: a ping every 200 ms
        assert ns.wait_for("READY=1", 10)
        pings = [t for t, m in ns.messages(2.0) if m == "WATCHDOG=1"]
        assert len(pings) >= 4, pings  # ~10 expected; generous for a loaded machine
        # a stuck loop sends none: stop the process
        slb.signal(signal.SIGSTOP)
        try:
            time.sleep(0.3)
            ns.messages(0.3)  # drain what was queued before the stop
            assert [m for _, m in ns.messages(1.5) if m == "WATCHDOG=1"] == []
        finally:
            slb.signal(signal.SIGCONT)
        assert ns.wait_for("WATCHDOG=1", 10)  # and they resume with the loop
        slb.signal(signal.SIGTERM)
        assert ns.wait_for("STOPPING=1", 10)
        assert slb.wait(10) == 0
    finally:
        ns.close()


def test_no_watchdog_pings_without_watchdog_usec(tmp_path):
    ns = NotifySocket(tmp_path / "notify")
    try:
        b = peers.start_c_backend("w1")
        old = os.environ.copy()
        os.environ["NOTIFY_SOCKET"] = ns.path
        os.environ.pop("WATCHDOG_USEC", None)
        try:
            start_sidelb(simple_config([b.addr]))
        finally:
            os.environ.clear()
            os.environ.update(old)
        assert ns.wait_for("READY=1", 10)
        assert [m for _, m in ns.messages(1.0) if m == "WATCHDOG=1"] == []
    finally:
        ns.close()


# ---------------------------------------------------------------- etcd password


def test_password_over_http_is_refused_unless_allowed(tmp_path):
    cfg = simple_config(["127.0.0.1:1"])
    cfg["etcd"] = {"endpoints": ["http://127.0.0.1:2379"], "username": "u", "password": "pw"}
    f = tmp_path / "c.json"
    f.write_text(__import__("json").dumps(cfg))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 1
    assert ("etcd.password: the password would be sent in clear to http://127.0.0.1:2379: use https:// "
            "endpoints, or set \"allow_insecure_password\": true") in r.stderr
    assert "pw\"" not in r.stderr.replace("password", "")
    r = subprocess.run([peers.binary("sidelb"), "-c", str(f)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "sent in clear" in r.stderr  # the daemon refuses to start too
    cfg["etcd"]["allow_insecure_password"] = True
    f.write_text(__import__("json").dumps(cfg))
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.timeout(60)
def test_password_file_with_credentials_directory_against_etcd_auth(tmp_path):
    from test_etcd_security import PREFIX, AuthEtcd, slb_config
    etcd = AuthEtcd()
    try:
        b = peers.start_c_backend("pf0")
        etcd.ctl_put(PREFIX + b.addr, b.addr)
        creds = tmp_path / "creds"
        creds.mkdir()
        (creds / "etcd-password").write_text("secret\n")  # trailing newline stripped
        cfg = slb_config({"endpoints": [etcd.url], "username": "sidelb", "allow_insecure_password": True,
                          "password_file": "${CREDENTIALS_DIRECTORY}/etcd-password"})
        old = os.environ.copy()
        os.environ["CREDENTIALS_DIRECTORY"] = str(creds)
        try:
            slb = start_sidelb(cfg)
        finally:
            os.environ.clear()
            os.environ.update(old)
        stub = peers.echo_stub(slb.addr)
        end = time.monotonic() + 10
        while True:
            try:
                assert stub.Unary(peers.req(), timeout=5).backend_id == "pf0"
                break
            except Exception:
                assert time.monotonic() < end, slb.log()
                time.sleep(0.1)
        assert "authentication failed" not in slb.log()
        assert "secret" not in slb.log()
    finally:
        etcd.destroy()
