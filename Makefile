# sidelb — build, test, demo, bench, install.
#
#   make            build build/sidelb and build/libsidelb.a
#   make deps       install missing Debian packages (root; idempotent)
#   make check      deps + build + every test: make test, then make asan, then make tsan
#   make test       format check, unit, integration, fuzz smoke (plain build)
#   make demo       deps + build + a live demo balancing real gRPC traffic
#   make bench      deps + build + side-by-side benchmark (tests/bench)
#   make asan       unit + integration again under ASan + UBSan (clang, build-asan/), with 2 worker loops
#   make tsan       worker tests + core integration files under ThreadSanitizer, 2 workers (build-tsan/)
#   make fuzz-smoke build the libFuzzer targets (clang) and run each FUZZ_SECONDS
#   make install    PREFIX=/usr/local DESTDIR= (install-lib / INSTALL_LIB=1: libsidelb.a + headers)
#
# BUILD=dir puts every output in another directory (parallel builds, asan).

BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
CC      ?= cc
PYTHON  ?= /usr/bin/python3

PKGS := libuv libnghttp2 libprotobuf-c libcurl jansson libxxhash openssl
CFLAGS ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing
override CPPFLAGS += -D_GNU_SOURCE -Ilib -I$(BUILD)/gen $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
CHECK_LIBS = $(shell pkg-config --libs check 2>/dev/null)

# Debian packages: build, run, and test/bench/demo needs.
DEB_BUILD := build-essential pkg-config clang clang-format libclang-rt-14-dev libuv1-dev libnghttp2-dev libprotobuf-c-dev protobuf-c-compiler \
             libcurl4-openssl-dev libjansson-dev libxxhash-dev libssl-dev check
DEB_TEST  := etcd-server etcd-client nghttp2-client nghttp2-server python3 python3-grpcio python3-grpc-tools python3-protobuf \
             python3-pytest python3-pytest-xdist python3-h2 curl procps openssl prometheus systemd man-db
DEB_BENCH := haproxy nginx valgrind
DEB_ALL   := $(DEB_BUILD) $(DEB_TEST) $(DEB_BENCH)

LIB_PROTOS  := proto/health.proto
TEST_PROTOS := proto/echo.proto

LIB_SRC  ?= $(sort $(wildcard lib/*.c))
LIB_OBJ  := $(patsubst lib/%.c,$(BUILD)/lib/%.o,$(LIB_SRC)) \
            $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.o,$(LIB_PROTOS))
GEN_H    := $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.h,$(LIB_PROTOS) $(TEST_PROTOS))
UNIT_SRC ?= $(sort $(wildcard tests/check_*.c))
UNIT_OBJ := $(patsubst tests/%.c,$(BUILD)/tests/%.o,$(UNIT_SRC))
BACKEND_SRC := $(sort $(wildcard tests/backend/*.c))
BACKEND_OBJ := $(patsubst tests/%.c,$(BUILD)/tests/%.o,$(BACKEND_SRC)) \
               $(patsubst proto/%.proto,$(BUILD)/gen/%.pb-c.o,$(TEST_PROTOS))
BENCH_SRC := $(sort $(wildcard tests/bench/*.c))
BENCH_BIN := $(patsubst tests/bench/%.c,$(BUILD)/%,$(BENCH_SRC))

.PHONY: all deps check test unit integration demo bench asan tsan tsan-build install install-lib clean format format-check
all: $(BUILD)/sidelb $(BUILD)/libsidelb.a

$(BUILD)/libsidelb.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/sidelb: $(BUILD)/daemon/main.o $(BUILD)/libsidelb.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h: proto/%.proto
	@mkdir -p $(@D)
	protoc-c --proto_path=proto --c_out=$(BUILD)/gen $<

$(BUILD)/gen/%.pb-c.o: $(BUILD)/gen/%.pb-c.c
	$(CC) $(CPPFLAGS) $(CFLAGS) -Wno-error -c -o $@ $<

$(BUILD)/lib/%.o: lib/%.c | $(GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/daemon/%.o: daemon/%.c | $(GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c -o $@ $<

$(BUILD)/tests/%.o: tests/%.c | $(GEN_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Itests $(CFLAGS) -MMD -MP -c -o $@ $<

# Unit tests: every tests/check_<module>.c exports <module>_suite(); the list
# is generated so check_main.c runs them all without being edited.
SUITES := $(filter-out main,$(patsubst tests/check_%.c,%,$(UNIT_SRC)))
$(BUILD)/gen/suites.h: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' $(foreach s,$(SUITES),'SLB_SUITE($(s))') > $@.tmp
	@if cmp -s $@.tmp $@; then rm $@.tmp; else mv $@.tmp $@; fi

.PHONY: FORCE
FORCE:

# keep generated protobuf sources (make would delete them as intermediates)
.PRECIOUS: $(BUILD)/gen/%.pb-c.c $(BUILD)/gen/%.pb-c.h

$(BUILD)/tests/check_main.o: $(BUILD)/gen/suites.h

$(BUILD)/check_sidelb: $(UNIT_OBJ) $(BUILD)/libsidelb.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(CHECK_LIBS) $(LDLIBS)

# Our C gRPC test backend (nghttp2 + libuv + protobuf-c).
$(BUILD)/test_backend: $(BACKEND_OBJ) $(BUILD)/libsidelb.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%: $(BUILD)/tests/bench/%.o $(BUILD)/libsidelb.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

TEST_BINS := $(BUILD)/sidelb $(BUILD)/check_sidelb $(BUILD)/test_backend

# Installs only what is missing; a no-op (and no root needed) when all is there.
deps:
	@missing=$$(for p in $(DEB_ALL); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing:" $$missing; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: run as root (or install: $$missing)" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "make deps: all Debian packages present"; fi

# Both passes run even when the first fails: CI reports every failure at once.
check: deps
	@failed=; $(MAKE) test || failed="$$failed test"; $(MAKE) asan || failed="$$failed asan"; \
	$(MAKE) tsan || failed="$$failed tsan"; \
	if [ -n "$$failed" ]; then echo "make check: FAILED in make$$failed (see above)" >&2; exit 1; fi; \
	echo "make check: all passed (make test, make asan, make tsan)"

test: $(TEST_BINS)
	$(MAKE) format-check
	$(MAKE) unit
	$(MAKE) integration
	$(MAKE) fuzz-smoke FUZZ_SECONDS=5

# The register suite (real etcd leases and TTLs: ~30 s, mostly waiting) runs
# beside the others; its output follows theirs, and either failing fails.
unit: $(BUILD)/check_sidelb
	@CK_DEFAULT_TIMEOUT=60 $(BUILD)/check_sidelb register > $(BUILD)/unit-register.log 2>&1 & reg=$$!; \
	CK_DEFAULT_TIMEOUT=60 $(BUILD)/check_sidelb --except register; rest=$$?; \
	wait $$reg; regrc=$$?; echo "--- suite register (run beside the others):"; cat $(BUILD)/unit-register.log; \
	test $$rest = 0 && test $$regrc = 0

# Two passes, both run even when the first fails, and either failing fails:
# the tests not marked serial spread over INTEGRATION_JOBS pytest-xdist
# workers (--dist loadfile: a module's tests and its module fixtures stay in
# one worker; they mostly wait on I/O, so more workers than cores), then the
# tests marked serial (time bounds, floods, soaks: tests/integration/conftest.py)
# one at a time. INTEGRATION_JOBS=0: the first pass without workers.
INTEGRATION_JOBS ?= 4
INTEGRATION_PYTEST = SIDELB_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q -p no:cacheprovider
integration: $(TEST_BINS)
	$(INTEGRATION_PYTEST) -n $(INTEGRATION_JOBS) --dist loadfile -m "not serial" --durations=15 tests/integration; \
	par=$$?; echo "--- integration: the tests marked serial, one at a time"; \
	$(INTEGRATION_PYTEST) -m serial --durations=15 tests/integration; ser=$$?; \
	test $$par = 0 && test $$ser = 0

demo: deps
	$(MAKE) $(BUILD)/sidelb $(BUILD)/test_backend
	SIDELB_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/demo.py

bench: deps
	$(MAKE) $(BUILD)/sidelb $(BUILD)/test_backend $(BENCH_BIN)
	SIDELB_BUILD=$(abspath $(BUILD)) $(PYTHON) tests/bench/bench.py

# The sanitizer pass: the unit and integration tests (lifecycle soak included)
# again, against a clang ASan + UBSan build. Every sidelb and test_backend the
# tests start is a sanitizer build; conftest.py fails a test whose processes
# printed a report. SIDELB_SANITIZER=1 lets a test that cannot run under a
# sanitizer skip itself (none does today). No format check or fuzz run here:
# the fuzzers already are ASan + UBSan builds (make test runs them).
# ASAN_OPTIONS / UBSAN_OPTIONS from the environment win over these.
ASAN_VARS = BUILD=build-asan CC=clang LDFLAGS="-fsanitize=address,undefined" \
            CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
ASAN_OPTIONS  ?= detect_leaks=1:abort_on_error=0:halt_on_error=1
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
# The soak runs 40 s here (60 s in make test): still ~8 reloads and every
# chaos kind, and it keeps make check under 20 minutes on 2 cores.
# This pass runs every sidelb with "workers": 2 (unless a test sets workers:
# tests/integration/sidelb_harness.py), so the plain pass covers one loop and
# this one the worker loops, each test under the sanitizers.
ASAN_SOAK_SECONDS ?= 40
ASAN_WORKERS ?= 2
ASAN_ENV = ASAN_OPTIONS=$(ASAN_OPTIONS) UBSAN_OPTIONS=$(UBSAN_OPTIONS) SIDELB_SANITIZER=1 \
           SIDELB_SOAK_SECONDS=$(ASAN_SOAK_SECONDS) SIDELB_TEST_WORKERS=$(ASAN_WORKERS)

asan:
	$(MAKE) $(ASAN_VARS) build-asan/sidelb build-asan/check_sidelb build-asan/test_backend
	$(ASAN_ENV) $(MAKE) $(ASAN_VARS) unit
	$(ASAN_ENV) $(MAKE) $(ASAN_VARS) integration

# The ThreadSanitizer pass ("workers": N, lib/worker.h): a clang TSan build in
# build-tsan/, then test_workers.py and the core files below with two workers
# (SIDELB_TEST_WORKERS; test_workers.py sets its own). conftest.py fails a test
# whose processes printed a race. halt_on_error=0: a test shows every race it
# hit, not only the first. tests/tsan.supp holds suppressions for third-party
# code only, each with its reason. TSAN_TESTS picks the files (the CI budget
# of this step is ~3 min on 2 cores): the soak runs 30 s here (reloads, kills,
# chaos: the most thread hand-offs per second). test_recovery.py is left out:
# its recovery-time bounds (e.g. failed calls <= unavoidable + 20) failed 1 run
# in 5 under TSan with two workers on a loaded machine (44 failed), never with a race.
# tests/tsan/libuv_close.c (linked in): TSan sees the descriptors libuv closes (see there why).
TSAN_HOOK = build-tsan/tests/tsan/libuv_close.o
TSAN_VARS = BUILD=build-tsan CC=clang LDFLAGS="-fsanitize=thread $(TSAN_HOOK)" \
            CFLAGS="-O1 -g -fsanitize=thread -fno-omit-frame-pointer"
TSAN_OPTIONS ?= halt_on_error=0:second_deadlock_stack=1:history_size=4:suppressions=$(abspath tests/tsan.supp)
TSAN_TESTS ?= test_workers.py test_proxy.py test_reload.py test_outlier.py test_policies.py test_lifecycle_soak.py
TSAN_SOAK_SECONDS ?= 30
TSAN_ENV = TSAN_OPTIONS=$(TSAN_OPTIONS) SIDELB_SANITIZER=1 SIDELB_TEST_WORKERS=2 SIDELB_BUILD=$(abspath build-tsan) \
           SIDELB_SOAK_SECONDS=$(TSAN_SOAK_SECONDS)

tsan-build:
	$(MAKE) $(TSAN_VARS) $(TSAN_HOOK)
	$(MAKE) $(TSAN_VARS) build-tsan/sidelb build-tsan/check_sidelb build-tsan/test_backend

tsan: tsan-build
	$(TSAN_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider --durations=10 $(addprefix tests/integration/,$(TSAN_TESTS))

# install: the binary, the systemd unit, the man pages, the example config,
# and SYSCONFDIR/sidelb/sidelb.json only when there is none (an existing one
# is never overwritten). The static library and its headers only when asked:
# make install-lib, or make install INSTALL_LIB=1.
SYSCONFDIR  ?= /etc
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
INSTALL_LIB ?=
MAN_PAGES   := docs/man/sidelb.8 docs/man/sidelb.json.5

install: $(BUILD)/sidelb $(if $(INSTALL_LIB),install-lib)
	install -D -m 0755 $(BUILD)/sidelb $(DESTDIR)$(PREFIX)/bin/sidelb
	install -D -m 0644 conf/sidelb.json $(DESTDIR)$(SYSCONFDIR)/sidelb/sidelb.json.example
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/sidelb/sidelb.json ]; then \
	  echo "make install: keeping the existing $(DESTDIR)$(SYSCONFDIR)/sidelb/sidelb.json"; \
	else install -m 0644 conf/sidelb.json $(DESTDIR)$(SYSCONFDIR)/sidelb/sidelb.json; fi
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' systemd/sidelb.service \
	  > $(DESTDIR)$(UNITDIR)/sidelb.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/sidelb.service
	install -D -m 0644 docs/man/sidelb.8 $(DESTDIR)$(MANDIR)/man8/sidelb.8
	install -D -m 0644 docs/man/sidelb.json.5 $(DESTDIR)$(MANDIR)/man5/sidelb.json.5

install-lib: $(BUILD)/libsidelb.a
	install -D -m 0644 $(BUILD)/libsidelb.a $(DESTDIR)$(PREFIX)/lib/libsidelb.a
	install -d $(DESTDIR)$(PREFIX)/include/sidelb
	install -m 0644 lib/*.h $(DESTDIR)$(PREFIX)/include/sidelb/

C_SOURCES = $(wildcard lib/*.[ch] daemon/*.c tests/*.[ch] tests/*/*.[ch])

format:
	clang-format -i $(C_SOURCES)

# Every C file as the project's .clang-format has it.
format-check:
	@bad=$$(for f in $(C_SOURCES); do clang-format --dry-run -Werror $$f >/dev/null 2>&1 || echo $$f; done); \
	if [ -n "$$bad" ]; then echo "not clang-formatted (run make format):" $$bad >&2; exit 1; fi; \
	echo "format-check: $(words $(C_SOURCES)) files clang-formatted"

clean:
	rm -rf $(BUILD) build-asan build-tsan

include tests/fuzz/fuzz.mk

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
