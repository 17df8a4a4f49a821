# libsop - top-level Makefile (plain GNU make; no CMake needed).
#
#   make demo        build and run examples/quickstart.c (embedded default)
#   make test        build and run the whole test suite
#   make asan        the suite under AddressSanitizer + UBSan
#   make tsan        the threaded tests under ThreadSanitizer
#   make lib         libsop.a and libsop.so only
#   make bench       libsop vs LMDB vs SQLite (bench/bench.mk, BENCHMARKS.md)
#   make bench-scale issue 12: N keys past the cache, + RocksDB (bench/scale.c)
#   make rust-test   the Rust binding: cargo test, clippy -D warnings, fmt --check
#   make rust-asan   the Rust binding's tests over an ASan-built libsop
#   make rust-bench  the binding vs the C API, rusqlite and lmdb (in make bench)
#   make install     PREFIX=/usr/local (DESTDIR stages): headers, libs, sop.pc
#   make lint        include layers, invariant IDs, error table, clang-format (scripts/lint.sh)
#
# Variants build into build/<variant>/ so they never mix objects.

VARIANT ?= release
BUILD   := build/$(VARIANT)
CC      ?= cc
PREFIX  ?= /usr/local
LIBDIR  ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -g -pthread -fPIC -fvisibility=hidden \
               -Iinclude -Isrc $(WARN)
ifeq ($(VARIANT),release)
  VFLAGS := -O2
else ifeq ($(VARIANT),debug)
  VFLAGS := -O0 -DSOP_LOCK_DEBUG
else ifeq ($(VARIANT),asan)
  VFLAGS := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -DSOP_LOCK_DEBUG
else ifeq ($(VARIANT),tsan)
  VFLAGS := -O1 -fsanitize=thread
else
  $(error unknown VARIANT $(VARIANT))
endif
ALL_CFLAGS := $(CFLAGS_BASE) $(VFLAGS) $(CFLAGS)
# Header dependencies: each compile writes $(BUILD)/dep/<output>.d (-MP: a
# header that goes away does not break the build), included at the end. They
# stay out of tests/ and examples/, whose every file is run.
depfile = $(BUILD)/dep/$(subst /,.,$(patsubst $(BUILD)/%,%,$(1))).d
DEPFLAGS = -MMD -MP -MF $(call depfile,$@)
LDLIBS  := -pthread

LIB_SRCS := $(wildcard src/*.c)
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)
TEST_SRCS := $(wildcard tests/test_*.c)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_SUPPORT := $(filter-out tests/test_%.c,$(wildcard tests/*.c))
TEST_SUPPORT_OBJS := $(TEST_SUPPORT:tests/%.c=$(BUILD)/tobj/%.o)
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/examples/%)

.PHONY: all lib test asan tsan demo install clean deps format lint examples tests rust-test \
        rust-demo rust-check-cargo rust-asan rust-bench
.SECONDARY:
all: lib examples tests tools

lib: $(BUILD)/libsop.a $(BUILD)/libsop.so
examples: $(EXAMPLE_BINS)
tests: $(TEST_BINS)

$(BUILD)/obj/%.o: src/%.c | $(BUILD)/obj $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tobj/%.o: tests/%.c | $(BUILD)/tobj $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Wno-missing-prototypes -c $< -o $@

$(BUILD)/libsop.a: $(LIB_OBJS)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libsop.so: $(LIB_OBJS)
	$(CC) $(ALL_CFLAGS) -shared -Wl,-soname,libsop.so.0 -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(TEST_SUPPORT_OBJS) $(BUILD)/libsop.a | $(BUILD)/tests $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) -Wno-missing-prototypes $< $(TEST_SUPPORT_OBJS) \
	    $(BUILD)/libsop.a -o $@ $(LDLIBS)

$(BUILD)/examples/%: examples/%.c $(BUILD)/libsop.a | $(BUILD)/examples $(BUILD)/dep
	$(CC) $(ALL_CFLAGS) $(DEPFLAGS) $< $(BUILD)/libsop.a -o $@ $(LDLIBS)

$(BUILD)/obj $(BUILD)/tobj $(BUILD)/tests $(BUILD)/examples $(BUILD)/dep:
	mkdir -p $@

deps:
	@scripts/deps.sh build

demo: deps $(BUILD)/examples/quickstart
	@mkdir -p $(BUILD)/demo
	cd $(BUILD)/demo && ../examples/quickstart
	@$(MAKE) --no-print-directory rust-demo

test: deps all
	@$(MAKE) --no-print-directory fuzz-keys-smoke FUZZ_KEYS_SECONDS=10
	@$(MAKE) --no-print-directory bench-smoke
	@scripts/run_tests.sh $(BUILD)
ifeq ($(VARIANT),release)
	@$(MAKE) --no-print-directory rust-test
endif

# The Rust binding (bindings/rust): built offline from Debian's crates with the
# rustup toolchain; build.rs compiles src/*.c into the crate itself. Cargo must
# run inside bindings/rust to find its .cargo/config.toml (offline source).
CARGO ?= $(firstword $(shell command -v cargo 2>/dev/null) $(wildcard $(HOME)/.cargo/bin/cargo) \
                     $(wildcard /root/.cargo/bin/cargo))
RUST_ENV = PATH="$(dir $(CARGO)):$$PATH"

rust-check-cargo:
	@test -n "$(CARGO)" || { echo "rust: cargo not found (PATH or ~/.cargo/bin)" >&2; exit 1; }
	@scripts/deps.sh rust

rust-test: rust-check-cargo
	+cd bindings/rust && $(RUST_ENV) $(CARGO) test -q
	+cd bindings/rust && $(RUST_ENV) $(CARGO) clippy -q --lib --tests -- -D warnings
	+cd bindings/rust && $(RUST_ENV) $(CARGO) clippy -q --examples -- -D warnings -A unused-imports
	+cd bindings/rust && $(RUST_ENV) $(CARGO) fmt --check
	+cd bindings/rust && RUSTDOCFLAGS="-D warnings" $(RUST_ENV) $(CARGO) doc -q --no-deps
	@d=$$(mktemp -d) && x=$(CURDIR)/bindings/rust/target/debug/examples && \
	  for e in employees threads two_phase; do $$x/$$e $$d/$$e >/dev/null || exit 1; done; \
	  for i in 1 2 3; do (cd $$d && $$x/announce) | grep -qx 'System configuration persisted safely.' \
	    || { echo "rust: announce run $$i failed" >&2; exit 1; }; done; \
	  out=$$($$x/read_quickstart $$d/data) && test "$$out" = "$$(printf 'max_connections = 10000\ntimeout_ms = 500')" \
	    || { echo "rust: read_quickstart printed: $$out" >&2; exit 1; }; \
	  rm -rf $$d; echo "rust: examples employees, threads, two_phase ran; announce 3 times on one folder, read back"

# The binding against libsop's C API, rusqlite and lmdb (bindings/rust/bench;
# its own lockfile, so only this target needs the peers' crates). Part of
# `make bench`. RUST_BENCH_ARGS: N runs folder.
RUST_BENCH_ARGS ?= 200000 3 $(CURDIR)/$(BUILD)/rust-bench
rust-bench: rust-check-cargo
	@scripts/deps.sh rust-bench
	+cd bindings/rust/bench && $(RUST_ENV) $(CARGO) build -q --release
	bindings/rust/bench/target/release/sop-bench $(RUST_BENCH_ARGS)
bench: rust-bench

# The binding's tests with libsop built under AddressSanitizer (the Rust side
# is not instrumented; Miri cannot run them: it does not execute C code),
# then every test binary under valgrind's memcheck, which checks the Rust
# side too: the binding's unsafe reads of bytes libsop lends (get_with,
# scan_with, iterators), the buffers it hands across, cursor and txn handles.
rust-asan: rust-check-cargo
	+cd bindings/rust && SOP_SANITIZE=address CARGO_TARGET_DIR=target/asan \
	  ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1 $(RUST_ENV) $(CARGO) test -q --tests
	@$(MAKE) --no-print-directory rust-memcheck

rust-memcheck: rust-check-cargo
	@scripts/deps.sh memcheck
	+@cd bindings/rust && bins=$$($(RUST_ENV) $(CARGO) test -q --tests --no-run --message-format=json | \
	    grep -o '"executable":"[^"]*"' | cut -d'"' -f4) && n=0 && for t in $$bins; do \
	  valgrind -q --error-exitcode=99 --leak-check=no $$t -q --test-threads=2 >/dev/null || \
	    { echo "rust-memcheck: $$t failed under valgrind" >&2; exit 1; }; n=$$((n + 1)); done; \
	  test $$n -ge 5 || { echo "rust-memcheck: $$n test binaries, expected 5" >&2; exit 1; }; \
	  echo "rust-memcheck: $$n test binaries clean under valgrind memcheck"

# SOP's announcement program (unchanged) on the folder the C quickstart used,
# three times (the store exists from the second run on: add returns Ok(false)),
# then Rust reads back what C and Rust wrote, and the C tool prints it: one
# database, two languages.
rust-demo: rust-check-cargo lib tools
	@mkdir -p $(BUILD)/demo
	+cd bindings/rust && $(RUST_ENV) $(CARGO) build -q --example announce --example read_quickstart
	cd $(BUILD)/demo && for i in 1 2 3; do $(CURDIR)/bindings/rust/target/debug/examples/announce || exit 1; done
	cd $(BUILD)/demo && $(CURDIR)/bindings/rust/target/debug/examples/read_quickstart ./data
	cd $(BUILD)/demo && ../tools/sop ./data scan sys_config

asan:
	$(MAKE) VARIANT=asan test
	$(MAKE) --no-print-directory rust-asan

tsan:
	$(MAKE) VARIANT=tsan all
	@SOP_TEST_THREADED_ONLY=1 scripts/run_tests.sh build/tsan

# sop.pc names the final PREFIX (not DESTDIR, which only stages the tree).
SOP_VERSION_STRING = $(shell sed -n 's/^\#define SOP_VERSION_STRING *"\(.*\)"/\1/p' include/sop.h)

install: lib install-tools
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 644 $(BUILD)/libsop.a $(DESTDIR)$(LIBDIR)/
	install -m 755 $(BUILD)/libsop.so $(DESTDIR)$(LIBDIR)/libsop.so.0
	ln -sf libsop.so.0 $(DESTDIR)$(LIBDIR)/libsop.so
	install -m 644 include/sop.h include/sop_sys.h include/sop_keys.h $(DESTDIR)$(INCLUDEDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(SOP_VERSION_STRING)|' sop.pc.in >$(DESTDIR)$(LIBDIR)/pkgconfig/sop.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/sop.pc

FORMAT_FILES = include/*.h src/*.c src/*.h tests/*.c tests/*.h examples/*.c tools/*.c tools/*.h

format:
	clang-format -i $(FORMAT_FILES)

# Fails on an #include in src/ that points up the layer list, a duplicate
# invariant ID, a code missing from errors.def, clang-format drift.
lint:
	@scripts/deps.sh lint
	@scripts/lint.sh $(FORMAT_FILES)

clean:
	rm -rf build

# An output without its .d was made before -MMD and would never see a header
# change: then the variant's outputs are removed, so they are all rebuilt
# with their dependencies (the libraries too: objects are .SECONDARY, so a
# missing one alone would not make libsop.a out of date).
DEP_OUTPUTS := $(LIB_OBJS) $(TEST_SUPPORT_OBJS) $(TEST_BINS) $(EXAMPLE_BINS)
ifneq ($(strip $(foreach o,$(wildcard $(DEP_OUTPUTS)),$(if $(wildcard $(call depfile,$o)),,$o))),)
  $(shell rm -f $(DEP_OUTPUTS) $(BUILD)/libsop.a $(BUILD)/libsop.so)
endif
-include $(wildcard $(foreach o,$(DEP_OUTPUTS),$(call depfile,$o)))
-include fuzz/fuzz.mk
-include fuzz/fuzz_engine.mk
-include tests/torture.mk
-include bench/bench.mk
-include tools/tools.mk
