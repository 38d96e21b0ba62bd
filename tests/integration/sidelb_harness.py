"""Starting sidelb itself in integration tests.

    start_sidelb(config: dict, extra_args=(), timeout=10) -> peers.Proc
        writes the config to a temp file, runs $SIDELB_BUILD/sidelb -c FILE,
        waits for its "ready" log line; .port is the first listener's port;
        without "state_dir" in config it gets a temp one (.state_dir).
    simple_config(backends, port=None, policy="round_robin", **cluster_extra)
        one listener routing sidelb.test.Echo to cluster "echo" with static backends.
    start_with_admin_listener(config) -> peers.Proc with .admin_port
        adds an "admin" listener on a free port and waits until it accepts.
    rss_kb(pid)  resident set size from /proc.
    with_test_workers(config) -> config
        with $SIDELB_TEST_WORKERS set (e.g. 2) and no "workers" key in config,
        a copy with "workers": int($SIDELB_TEST_WORKERS); else config itself.
        start_sidelb applies it; so must any test that writes a config of its
        own for a start or a SIGHUP reload. A test that inherently assumes one
        forwarding loop pins "workers": 1 in its config (with a comment why).
"""

import atexit
import json
import os
import shutil
import tempfile

import peers


def with_test_workers(config):
    # the whole suite can run against N worker loops (make asan runs it with 2)
    n = os.environ.get("SIDELB_TEST_WORKERS")
    if not n or "workers" in config:
        return config
    return dict(config, workers=int(n))


def start_sidelb(config, extra_args=(), timeout=10.0, log_level="info", binary=None, temp_state_dir=True):
    # never /var/lib/sidelb; .state_dir is kept for reloads. temp_state_dir=False for
    # a binary that predates the key (bench's "before").
    if "state_dir" not in config and temp_state_dir:
        config = dict(config, state_dir=tempfile.mkdtemp(prefix="sidelb-state-"))
        atexit.register(shutil.rmtree, config["state_dir"], True)
    config = with_test_workers(config)
    fd, path = tempfile.mkstemp(prefix="sidelb-conf-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
    argv = [binary or peers.binary("sidelb"), "-c", path, "-l", log_level] + list(extra_args)
    p = peers.Proc(argv, name="sidelb", ready=r"sidelb \S+ ready", timeout=timeout)
    p.config_path = path
    p.state_dir = config.get("state_dir")
    first = config["listeners"][0]["address"]
    p.port = None if first.startswith("unix:") else int(first.rsplit(":", 1)[1])  # unix:/path has no port
    return p


def start_with_admin_listener(config, **kw):
    port = peers.free_port()
    config["admin"] = {"address": "127.0.0.1:%d" % port}
    slb = start_sidelb(config, **kw)
    slb.admin_port = port
    assert peers.wait_port(port, 5), "admin port never opened"
    return slb


def simple_config(backends, port=None, policy="round_robin", policy_options=None, default_cluster=False,
                  **cluster_extra):
    port = port or peers.free_port()
    listener = {"name": "test", "address": "127.0.0.1:%d" % port,
                "routes": [{"service": "sidelb.test.Echo", "cluster": "echo"}]}
    if default_cluster:
        listener["default_cluster"] = "echo"
    cluster = {"name": "echo", "discovery": {"static": list(backends)},
               "policy": {policy: policy_options or {}}}
    cluster.update(cluster_extra)
    return {"listeners": [listener], "clusters": [cluster]}


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0
