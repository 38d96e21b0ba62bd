# libFuzzer targets for sidelb (tests/fuzz/README.md). Included from the
# Makefile; also usable alone: make -f tests/fuzz/fuzz.mk fuzz-smoke
#
#   make fuzz-build                  build $(FUZZ_BUILD)/fuzz_* (clang, libFuzzer + ASan + UBSan)
#   make fuzz-smoke FUZZ_SECONDS=10  run each fuzzer that long on its corpus; non-zero on a crash
#
# Needs clang and libclang-rt-14-dev (libFuzzer runtime). The lib sources are
# compiled again with coverage + sanitizers into $(FUZZ_BUILD)/ (never into
# $(BUILD)/), and each fuzzer links only the objects it needs (via an archive).

BUILD         ?= build
FUZZ_BUILD    ?= $(BUILD)-fuzz
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 10
FUZZ_PKGS     := libuv libnghttp2 libprotobuf-c libcurl jansson libxxhash openssl
FUZZ_SAN      := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS   := -O1 -g $(FUZZ_SAN) -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -fno-strict-aliasing
FUZZ_CPPFLAGS := -D_GNU_SOURCE -Ilib -I$(FUZZ_BUILD)/gen $(shell pkg-config --cflags $(FUZZ_PKGS) 2>/dev/null)
FUZZ_LDLIBS   := $(shell pkg-config --libs $(FUZZ_PKGS) 2>/dev/null) -lm

FUZZ_LIB_SRC  := $(sort $(wildcard lib/*.c))
FUZZ_LIB_OBJ  := $(patsubst lib/%.c,$(FUZZ_BUILD)/lib/%.o,$(FUZZ_LIB_SRC)) $(FUZZ_BUILD)/gen/health.pb-c.o
FUZZ_SRC      := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES    := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))
FUZZ_BINS     := $(addprefix $(FUZZ_BUILD)/,$(FUZZ_NAMES))

.PHONY: fuzz-build fuzz-smoke
fuzz-build: $(FUZZ_BINS)

$(FUZZ_BUILD)/gen/health.pb-c.c $(FUZZ_BUILD)/gen/health.pb-c.h: proto/health.proto
	@mkdir -p $(FUZZ_BUILD)/gen
	protoc-c --proto_path=proto --c_out=$(FUZZ_BUILD)/gen $<

$(FUZZ_BUILD)/gen/health.pb-c.o: $(FUZZ_BUILD)/gen/health.pb-c.c
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -Wno-error -c -o $@ $<

$(FUZZ_BUILD)/lib/%.o: lib/%.c | $(FUZZ_BUILD)/gen/health.pb-c.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c -o $@ $<

$(FUZZ_BUILD)/libsidelb-fuzz.a: $(FUZZ_LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FUZZ_BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_BUILD)/libsidelb-fuzz.a
	$(FUZZ_CC) $(FUZZ_CPPFLAGS) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libsidelb-fuzz.a $(FUZZ_LDLIBS)

# New inputs go to $(FUZZ_BUILD)/corpus/NAME (the seeds in tests/fuzz/corpus
# are read, never written); crash reproducers to $(FUZZ_BUILD)/crash-NAME-*.
fuzz-smoke: fuzz-build
	@set -e; for f in $(FUZZ_NAMES); do \
	  n=$${f#fuzz_}; mkdir -p $(FUZZ_BUILD)/corpus/$$n; \
	  echo "fuzz-smoke: $$f for $(FUZZ_SECONDS)s"; \
	  ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
	  $(FUZZ_BUILD)/$$f -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/crash-$$n- $(FUZZ_BUILD)/corpus/$$n tests/fuzz/corpus/$$n \
	    > $(FUZZ_BUILD)/fuzz-$$n.log 2>&1 || { tail -n 60 $(FUZZ_BUILD)/fuzz-$$n.log; echo "fuzz-smoke: $$f FAILED (log: $(FUZZ_BUILD)/fuzz-$$n.log)"; exit 1; }; \
	  grep -E '^stat::number_of_executed_units' $(FUZZ_BUILD)/fuzz-$$n.log || true; \
	done; echo "fuzz-smoke: all fuzzers ran clean"

-include $(wildcard $(FUZZ_BUILD)/lib/*.d)
