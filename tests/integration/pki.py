"""Certificates for tests, made by openssl inside the test: CAs and the
certificates they sign, written as NAME.key / NAME.pem in a directory."""

import os
import subprocess

EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]  # quick to make on a loaded machine
RSA_KEY = ["-newkey", "rsa:2048", "-nodes"]


def openssl(*args, cwd):
    r = subprocess.run(["openssl"] + list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(args), r.stdout.decode("utf-8", "replace"))


def make_ca(d, name, newkey=EC_KEY):
    """A self-signed CA valid for 2 days: d/NAME.key, d/NAME.pem."""
    openssl("req", "-x509", *newkey, "-keyout", name + ".key", "-out", name + ".pem", "-days", "2", "-subj",
            "/CN=sidelb test " + name, cwd=d)


def make_cert(d, name, ca, ext, cn=None, days="2", newkey=EC_KEY):
    """d/NAME.key and d/NAME.pem for CN cn (default NAME), signed by CA ca,
    with the extensions in the text ext (kept as d/NAME.ext); days "-1" makes
    one that expired yesterday."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(ext)
    openssl("req", *newkey, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + (cn or name), cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
            "-out", name + ".pem", "-days", days, "-extfile", name + ".ext", cwd=d)
