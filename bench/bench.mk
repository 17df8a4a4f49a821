# bench/bench.mk - the benchmark harness (issue 4): libsop, LMDB and SQLite on
# the same workloads in the same run. Included by the top-level Makefile
# (`-include bench/bench.mk`, after its variables); uses its $(BUILD), $(CC),
# $(ALL_CFLAGS), $(LDLIBS) and the $(BUILD)/libsop.a rule.
#
#   make bench          install deps (scripts/deps.sh bench), build -O2, run the
#                       default suite (N = 1,000,000, 3 runs); writes
#                       bench/results/latest.{txt,json,png}
#   make bench-smoke    N = 1,000, one run, every engine, correctness only
#                       (every read verified); a few seconds. For `make test`.
#   make bench-build    only build $(BUILD)/bench/bench
#   make bench-scale    issue 12: fillrandom, readrandom, overwrite, mixed and
#                       deleterandom at SCALE_N keys (default 1M) with each
#                       cache in SCALE_CACHES (256M,64M), for libsop, RocksDB,
#                       LMDB and SQLite (bench/scale.c); writes
#                       bench/results/scale-latest.txt. SCALE_ENGINES picks.
#
# BENCH_ENGINES picks the drivers compiled in (default: sop,lmdb,sqlite; add
# rocksdb for Debian's librocksdb-dev). Until the
# engine links, run the peers alone:   make bench BENCH_ENGINES=lmdb,sqlite
# driver_sop.c is compiled (not linked) either way, so it keeps matching sop.h.
# BENCH_ARGS adds flags to the run, e.g.
#   make bench BENCH_ARGS='--runs=5 --workloads=fillrandom,readrandom'
# `$(BUILD)/bench/bench --help` lists every flag.

ifndef BUILD
$(error bench/bench.mk: include it after BUILD is defined in the Makefile)
endif

BENCH_ENGINES    ?= sop,lmdb,sqlite
BENCH_ARGS       ?=
BENCH_SMOKE_ARGS ?=
BENCH_OUT        := $(BUILD)/bench
BENCH_BIN        := $(BENCH_OUT)/bench
BENCH_RESULTS    ?= bench/results
BENCH_DATA       ?= $(BENCH_OUT)/data

bench_comma   := ,
bench_engines := $(sort $(subst $(bench_comma), ,$(BENCH_ENGINES)))
bench_unknown := $(filter-out sop lmdb sqlite rocksdb,$(bench_engines))
ifneq ($(bench_unknown),)
$(error BENCH_ENGINES: unknown engine(s) $(bench_unknown); choose from sop,lmdb,sqlite,rocksdb)
endif

BENCH_DEFS := $(if $(filter sop,$(bench_engines)),-DBENCH_WITH_SOP) \
              $(if $(filter lmdb,$(bench_engines)),-DBENCH_WITH_LMDB) \
              $(if $(filter sqlite,$(bench_engines)),-DBENCH_WITH_SQLITE) \
              $(if $(filter rocksdb,$(bench_engines)),-DBENCH_WITH_ROCKSDB)
BENCH_CORE := $(BENCH_OUT)/bench.o $(BENCH_OUT)/report.o $(BENCH_OUT)/keys_bench.o
BENCH_OBJS := $(BENCH_CORE) $(foreach e,$(bench_engines),$(BENCH_OUT)/driver_$(e).o)
BENCH_LINK := $(if $(filter sop,$(bench_engines)),$(BUILD)/libsop.a) \
              $(if $(filter lmdb,$(bench_engines)),-llmdb) \
              $(if $(filter sqlite,$(bench_engines)),-lsqlite3) \
              $(if $(filter rocksdb,$(bench_engines)),-lrocksdb)
BENCH_HDRS := $(wildcard bench/*.h) include/sop.h

.PHONY: bench bench-smoke bench-build bench-deps bench-force

bench-deps:
	@scripts/deps.sh bench

# Rebuild when BENCH_ENGINES changes: the stamp holds the last engine list.
$(BENCH_OUT)/engines.stamp: bench-force | $(BENCH_OUT)
	@echo '$(bench_engines)' | cmp -s - $@ || echo '$(bench_engines)' > $@

$(BENCH_OUT):
	mkdir -p $@

$(BENCH_OUT)/%.o: bench/%.c $(BENCH_HDRS) $(BENCH_OUT)/engines.stamp | bench-deps $(BENCH_OUT)
	$(CC) $(ALL_CFLAGS) $(BENCH_DEFS) -c $< -o $@

$(BENCH_BIN): $(BENCH_OBJS) $(BENCH_OUT)/driver_sop.o $(filter %.a,$(BENCH_LINK))
	$(CC) $(ALL_CFLAGS) -o $@ $(BENCH_OBJS) $(BENCH_LINK) $(LDLIBS)

bench-build: $(BENCH_BIN)

bench: $(BENCH_BIN)
ifneq ($(VARIANT),release)
	@echo "bench: warning: VARIANT=$(VARIANT) is not the -O2 release build; numbers are not comparable" >&2
endif
	@mkdir -p $(BENCH_RESULTS)
	@echo "bench: engines $(BENCH_ENGINES); progress on stderr, table at the end" >&2
	@$(BENCH_BIN) --dir=$(BENCH_DATA) --json=$(BENCH_RESULTS)/latest.json \
	    --chart=$(BENCH_RESULTS)/latest.png $(BENCH_ARGS) > $(BENCH_RESULTS)/latest.txt; \
	  rc=$$?; cat $(BENCH_RESULTS)/latest.txt; exit $$rc

bench-smoke: $(BENCH_BIN)
	@$(BENCH_BIN) --num=1000 --sync-num=200 --sop-nums=1000 --sop-slots=1000 --runs=1 \
	    --strace=no --timeout=120 --dir=$(BENCH_OUT)/smoke-data \
	    --json=$(BENCH_OUT)/smoke.json $(BENCH_SMOKE_ARGS) > $(BENCH_OUT)/smoke.txt 2>&1 \
	  && echo "bench-smoke: ok ($(BENCH_ENGINES): every workload, every read verified; $(BENCH_OUT)/smoke.txt)" \
	  || { cat $(BENCH_OUT)/smoke.txt; echo "bench-smoke: FAILED"; exit 1; }

# ---- bench-scale (bench/scale.c) ------------------------------------------
SCALE_ENGINES ?= sop,rocksdb,lmdb,sqlite
SCALE_N       ?= 1000000
SCALE_CACHES  ?= 256M,64M
SCALE_ARGS    ?=
SCALE_BIN     := $(BENCH_OUT)/scale
SCALE_DEFS    := -DBENCH_WITH_SOP -DBENCH_WITH_ROCKSDB -DBENCH_WITH_LMDB -DBENCH_WITH_SQLITE
SCALE_OBJS    := $(BENCH_OUT)/scale.o $(BENCH_OUT)/driver_sop.o $(BENCH_OUT)/driver_rocksdb.o \
                 $(BENCH_OUT)/driver_lmdb.o $(BENCH_OUT)/driver_sqlite.o

.PHONY: bench-scale bench-scale-build

$(BENCH_OUT)/scale.o: bench/scale.c $(BENCH_HDRS) | bench-deps $(BENCH_OUT)
	$(CC) $(ALL_CFLAGS) $(SCALE_DEFS) -c $< -o $@

$(SCALE_BIN): $(SCALE_OBJS) $(BUILD)/libsop.a
	$(CC) $(ALL_CFLAGS) -o $@ $(SCALE_OBJS) $(BUILD)/libsop.a -lrocksdb -llmdb -lsqlite3 -ldl \
	    $(LDLIBS)

bench-scale-build: $(SCALE_BIN)

bench-scale: $(SCALE_BIN)
	@mkdir -p $(BENCH_RESULTS)
	@$(SCALE_BIN) --num=$(SCALE_N) --caches=$(SCALE_CACHES) --engines=$(SCALE_ENGINES) \
	    --dir=$(BENCH_OUT)/scale-data $(SCALE_ARGS) | tee $(BENCH_RESULTS)/scale-latest.txt
