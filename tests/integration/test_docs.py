"""The README, the config reference and the example config stay true to the
code: every complete JSON config they show passes `sidelb --check-config`."""

import json
import os
import re
import subprocess

import pytest

import peers

DOCS = [os.path.join(peers.REPO_ROOT, p) for p in ("README.md", "docs/config.md")]


def json_blocks():
    for path in DOCS:
        for i, block in enumerate(re.findall(r"```json\n(.*?)```", open(path).read(), re.S)):
            try:
                doc = json.loads(block)
            except ValueError:
                continue  # a fragment (one section), not a whole file
            if isinstance(doc, dict) and "listeners" in doc:
                yield pytest.param(block, id="%s-%d" % (os.path.basename(path), i))


@pytest.mark.parametrize("block", list(json_blocks()))
def test_documented_configs_are_valid(block, tmp_path):
    f = tmp_path / "c.json"
    f.write_text(block)
    r = subprocess.run([peers.binary("sidelb"), "--check-config", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_example_config_is_valid():
    r = subprocess.run([peers.binary("sidelb"), "--check-config", os.path.join(peers.REPO_ROOT, "conf", "sidelb.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout


def test_every_cluster_key_is_documented():
    """Each key config.c accepts under clusters[] appears in docs/config.md."""
    src = open(os.path.join(peers.REPO_ROOT, "lib", "config.c")).read()
    keys = re.search(r"load_cluster\(.*?keys\[\] = \{(.*?)NULL\}", src, re.S).group(1)
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "config.md")).read()
    keys = re.findall(r'"(\w+)"', keys)
    assert len(keys) >= 10, keys
    for key in keys:
        assert "`%s`" % key in doc, "clusters[].%s is not documented" % key


def test_every_listener_key_is_documented():
    """Each key config.c accepts under listeners[] appears in docs/config.md,
    in the listeners table (a row per key)."""
    src = open(os.path.join(peers.REPO_ROOT, "lib", "config.c")).read()
    keys = re.findall(r'"(\w+)"', re.search(r"load_listener\(.*?keys\[\] = \{(.*?)NULL\}", src, re.S).group(1))
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "config.md")).read()
    table = doc.split("## `listeners[]`", 1)[1].split("\n## ", 1)[0]
    assert len(keys) >= 7, keys
    for key in keys:
        assert "| `%s` |" % key in table, "listeners[].%s has no row in docs/config.md" % key


def test_every_listener_and_top_level_key_is_documented():
    """Each key config.c accepts under listeners[] and at the top level appears in docs/config.md."""
    src = open(os.path.join(peers.REPO_ROOT, "lib", "config.c")).read()
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "config.md")).read()
    for fn in ("load_listener", "load_root"):
        keys = re.findall(r'"(\w+)"', re.search(fn + r"\(.*?keys\[\] = \{(.*?)NULL\}", src, re.S).group(1))
        assert len(keys) >= 6, keys
        for key in keys:
            assert "`%s`" % key in doc, "%s key %s is not documented" % (fn, key)


def test_every_budgets_key_is_documented():
    """Each key config.c accepts under budgets appears in docs/config.md."""
    src = open(os.path.join(peers.REPO_ROOT, "lib", "config.c")).read()
    keys = re.findall(r'"(\w+)"', re.search(r"load_budgets\(.*?keys\[\] = \{(.*?)NULL\}", src, re.S).group(1))
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "config.md")).read()
    table = doc.split("## `budgets`", 1)[1].split("\n## ", 1)[0]
    assert len(keys) == 4, keys
    for key in keys:
        assert "| `%s` |" % key in table, "budgets.%s has no row in docs/config.md" % key
