# syncstore — build, test, demo.  `make demo` and `make test` install the
# Debian packages they need first (scripts/deps.sh; idempotent, quiet).

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN     = -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter
CPPFLAGS = -D_GNU_SOURCE -Isrc
LIBS     = -lssl -lcrypto -lsqlite3 -lzstd -levent -lpthread
STD      = -std=c11

SRC_ALL  := $(sort $(wildcard src/*/*.c))
SRC_MAIN := src/cli/main.c
SRC_LIB  := $(filter-out $(SRC_MAIN),$(SRC_ALL))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
FUZZ_SRC := $(sort $(wildcard fuzz/fuzz_*.c))

# Two build flavours share one rule set: build/ (optimised) and build-asan/.
B        ?= build
OBJ      := $(patsubst src/%.c,$(B)/obj/%.o,$(SRC_LIB))
MAINOBJ  := $(B)/obj/cli/main.o
UNITS    := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
PYTEST   := /usr/bin/python3 -m pytest

.PHONY: all deps test test-unit test-fuzz-corpus test-integration test-asan demo fuzz bench clean sim sim-selftest

all: $(B)/syncstore $(B)/tracker $(B)/client $(UNITS)

deps:
	@scripts/deps.sh

$(B)/obj/%.o: src/%.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -MMD -c -o $@ $<

$(B)/libsyncstore.a: $(OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/syncstore: $(MAINOBJ) $(B)/libsyncstore.a
	$(CC) $(CFLAGS) -o $@ $^ $(LIBS)

$(B)/tracker $(B)/client: $(B)/syncstore
	ln -sf syncstore $@

$(B)/tests/%: tests/unit/%.c $(B)/libsyncstore.a $(wildcard tests/unit/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ $< $(B)/libsyncstore.a $(LIBS) -lcmocka

-include $(OBJ:.o=.d) $(MAINOBJ:.o=.d)

# ---- tests ----
test: deps
	@scripts/test.sh

test-unit: all
	@set -e; for t in $(UNITS); do echo "== $$t"; ./$$t; done

# Replays every fuzz corpus through the decoders (no libFuzzer needed).
test-fuzz-corpus: $(B)/fuzz-replay
	@set -e; for d in fuzz/corpus/*/; do n=$$(basename $$d); \
	  ./$(B)/fuzz-replay $$n $$d; done

$(B)/fuzz-replay: fuzz/replay.c $(FUZZ_SRC) $(B)/libsyncstore.a
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -DFUZZ_REPLAY -o $@ fuzz/replay.c $(FUZZ_SRC) $(B)/libsyncstore.a $(LIBS)

test-integration: all
	SYNCSTORE_BIN=$(CURDIR)/$(B)/syncstore $(PYTEST) -q tests/integration $(PYTEST_ARGS)

test-asan:
	$(MAKE) B=build-asan CC=clang CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all build-asan/fuzz-replay build-asan/sim

# ---- fuzzing (libFuzzer, clang) ----
FUZZ_FLAGS = -O1 -g -fsanitize=fuzzer,address,undefined
fuzz: deps
	@mkdir -p build-fuzz
	$(MAKE) B=build-fuzz CC=clang CFLAGS="-O1 -g -fsanitize=address,undefined -fsanitize=fuzzer-no-link" build-fuzz/libsyncstore.a
	@set -e; for f in $(FUZZ_SRC); do n=$$(basename $$f .c); \
	  clang $(STD) $(CPPFLAGS) $(FUZZ_FLAGS) -o build-fuzz/$$n $$f build-fuzz/libsyncstore.a $(LIBS); \
	  mkdir -p fuzz/corpus/$${n#fuzz_}; \
	  echo "== $$n ($${FUZZ_SECONDS:-30}s)"; \
	  ./build-fuzz/$$n -max_total_time=$${FUZZ_SECONDS:-30} -max_len=300000 fuzz/corpus/$${n#fuzz_} 2>&1 | tail -n 2; done

# ---- deterministic simulator (tests/sim; docs/REPLICATION.md) ----
# `make sim` runs 1,000 seeds; `make sim SEED=n` replays one.  The planted-bug
# binaries compile the few sources with SIM_BUG hooks (core/repl.c,
# core/apply.c, core/node.c, store/store.c, tests/sim/sim.c) with -DSIM_BUG=k ahead of the library, so
# the linker takes those objects instead of the library's.
SIM_SEEDS ?= 1000
SIM_BUG_SRC := src/core/repl.c src/core/apply.c src/core/node.c src/store/store.c
SIM_BUGS := 1 2 3 4 5 6

$(B)/sim: tests/sim/sim.c $(B)/libsyncstore.a $(wildcard tests/sim/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -o $@ tests/sim/sim.c $(B)/libsyncstore.a $(LIBS)

$(B)/sim-bug%: tests/sim/sim.c $(SIM_BUG_SRC) $(B)/libsyncstore.a
	@mkdir -p $(dir $@)
	$(CC) $(STD) $(CPPFLAGS) $(CFLAGS) $(WARN) -DSIM_BUG=$* -o $@ tests/sim/sim.c $(SIM_BUG_SRC) \
	  $(B)/libsyncstore.a $(LIBS)

sim: $(B)/sim
	@./$(B)/sim $(if $(SEED),--seed $(SEED),--seeds $(SIM_SEEDS))

# Each planted bug must make the simulator fail on a seed the unplanted
# build passes (tests/sim/selftest.sh prints the check that caught it).
SIM_SELFTEST_SEEDS ?= 1000
SIM_SELFTEST_HARSH ?= 300
sim-selftest: $(B)/sim $(addprefix $(B)/sim-bug,$(SIM_BUGS))
	@tests/sim/selftest.sh $(B) $(SIM_SELFTEST_SEEDS) $(SIM_SELFTEST_HARSH) $(SIM_BUGS)

# ---- demo, benchmarks ----
demo: deps all
	@scripts/demo.sh

bench: deps all
	@bench/run.sh

clean:
	rm -rf build build-asan build-fuzz
