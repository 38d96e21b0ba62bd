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


# ---- every key the parser accepts, in docs/config.md and in sidelb.json(5) ----

MAN5 = os.path.join(peers.REPO_ROOT, "docs", "man", "sidelb.json.5")
MAN8 = os.path.join(peers.REPO_ROOT, "docs", "man", "sidelb.8")
# The parser's key lists: `static const char *const keys[] = {..., NULL};` and the like
# (keys, *_keys, k_*); other string tables (status code names) are not keys.
KEY_ARRAY = re.compile(r"static const char \*const ((?:\w+_)?keys|k_\w+)\[\] = \{([^;{}]*?)NULL\s*\}", re.S)


def parser_keys():
    """{key: ["load_etcd() keys[]", ...]}: each key lib/config.c accepts and the list(s) it is in."""
    src = open(os.path.join(peers.REPO_ROOT, "lib", "config.c")).read()
    funcs = [(m.start(), m.group(1)) for m in re.finditer(r"^static [^\n(;]*?\b(\w+)\(", src, re.M)]
    keys = {}
    for m in KEY_ARRAY.finditer(src):
        fn = [name for start, name in funcs if start <= m.start()][-1]
        for key in re.findall(r'"(\w+)"', m.group(2)):
            keys.setdefault(key, []).append("%s() %s[]" % (fn, m.group(1)))
    return keys


def test_parser_keys_are_found():
    keys = parser_keys()
    assert len(keys) >= 100, sorted(keys)
    for key in ("password_file", "allow_insecure_password", "etcd_prefix", "window_ms", "read_bytes_per_turn"):
        assert key in keys, key


def missing_report(where, missing, keys):
    return "%d key(s) the parser accepts are not in %s:\n%s" % (
        len(missing), where, "\n".join("  %s  (lib/config.c %s)" % (k, ", ".join(keys[k])) for k in missing))


def test_every_parser_key_is_in_config_md():
    keys = parser_keys()
    doc = open(os.path.join(peers.REPO_ROOT, "docs", "config.md")).read()
    missing = sorted(k for k in keys if "`%s`" % k not in doc)
    assert not missing, missing_report("docs/config.md (as `key`)", missing, keys)


def test_every_parser_key_is_in_the_man_page():
    """sidelb.json(5) names each key in bold: \\fBkey\\fR, `.B key`, `.BR key ...` or `.RB x key ...`."""
    keys = parser_keys()
    man = open(MAN5).read()
    missing = sorted(k for k in keys
                     if not re.search(r"\\fB{0}\\f[RP]|^\.BR? {0}\b|^\.RB \S+ {0}\b".format(re.escape(k)), man, re.M))
    assert not missing, missing_report("docs/man/sidelb.json.5 (in bold: .B key)", missing, keys)


@pytest.mark.parametrize("page", [MAN5, MAN8], ids=["sidelb.json.5", "sidelb.8"])
def test_man_pages_render_without_warnings(page):
    if not os.path.exists("/usr/bin/man"):
        pytest.skip("man-db not installed (Makefile DEB_TEST has it)")
    r = subprocess.run(["man", "--warnings", "-l", page], capture_output=True, text=True,
                       env=dict(os.environ, MANWIDTH="80", MAN_KEEP_FORMATTING="0"))
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "SEE ALSO" in re.sub(r".\x08", "", r.stdout)  # man's overstrike bold
