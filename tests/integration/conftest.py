"""pytest glue for sidelb's integration tests.

- Every peers.Proc started during a test is stopped after it (SIGTERM, then
  SIGKILL), pass or fail; the logs of the test's processes are printed when
  the test fails.
- Each test has a wall-clock limit (signal.alarm): @pytest.mark.timeout(S), or
  $SIDELB_TEST_TIMEOUT (default 60 s).
- $SIDELB_BUILD names the build dir holding sidelb and test_backend
  (default <repo>/build); fixture `build_dir` returns it.
- $SIDELB_TEST_WORKERS=N runs every sidelb with "workers": N unless its
  config sets "workers" (sidelb_harness.with_test_workers; `make asan` uses 2).
- Fixtures c_backend / py_backend are factories: c_backend("b1",
  extra_args=[...]) -> peers.Backend.
- `make integration` runs the suite in two passes: the tests not marked
  serial in pytest-xdist workers side by side (-n, --dist loadfile: a
  module's tests, and its module fixtures, stay in one worker), then the
  tests marked @pytest.mark.serial (or pytestmark = pytest.mark.serial)
  alone. Mark serial a test that asserts a duration or latency with little
  slack (p99, recovery lag, "took < 1 s", a fixed sleep a timer must beat),
  or that loads the machine (floods, soaks, stress): beside other tests it
  would flake, or make them flake. Every process a test starts picks ports
  with peers.free_port() (per-worker shares) or port 0, and files with
  tempfile, so workers never share one.
"""

import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peers  # noqa: E402

DEFAULT_TIMEOUT = int(os.environ.get("SIDELB_TEST_TIMEOUT", "60"))
# what a sanitizer build prints when it finds something (TSan goes on after a race: halt_on_error=0)
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "WARNING: ThreadSanitizer")


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): wall-clock limit of one test (signal.alarm)")
    config.addinivalue_line("markers", "serial: timing-sensitive or machine-loading; make integration runs it "
                            "alone, after the others ran in parallel")


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _limits_and_cleanup(request):
    m = request.node.get_closest_marker("timeout")
    limit = int(m.args[0]) if m else DEFAULT_TIMEOUT

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded %d s" % limit)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    first = len(peers._procs)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        failed = getattr(request.node, "_sidelb_failed", False)
        stopped = peers.stop_all(first)
        # Under `make asan` / `make tsan` every sidelb and test backend is a sanitizer build:
        # a memory error, undefined behaviour, leak or data race report fails the test.
        sanitizer = [p for p in stopped if any(m in p.log() for m in SANITIZER_MARKERS)]
        failed = failed or bool(sanitizer)
        for p in reversed(stopped):
            if failed:
                sys.stderr.write("\n----- log of %s (pid %s, %s) -----\n%s" % (p.name, p.pid, p.log_path,
                                                                             p.log()[-4000:]))
            else:
                p.remove_files()
        if sanitizer:
            raise AssertionError("sanitizer report from %s" % ", ".join(p.name for p in sanitizer))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        item._sidelb_failed = True


@pytest.fixture
def build_dir():
    return peers.BUILD


@pytest.fixture
def c_backend():
    return peers.start_c_backend


@pytest.fixture
def py_backend():
    return peers.start_py_backend
