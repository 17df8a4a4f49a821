# fuzz/fuzz_engine.mk - fuzz targets for the engine's decoders, mirroring fuzz/fuzz.mk
# (which it relies on: FUZZ_CC, FUZZ_DIR, FUZZ_CFLAGS, FUZZ_SAN, fuzz-deps).
# The top-level Makefile does `-include fuzz/fuzz_engine.mk` after fuzz/fuzz.mk
# (until it does: make -f Makefile -f fuzz/fuzz_engine.mk <target>).
#
#   make fuzz-node           build build/fuzz/fuzz_node (clang, libFuzzer + ASan + UBSan):
#                            sop_node__validate on arbitrary bytes + round trips and edits
#   make fuzz-node-smoke     write the seed corpus, fuzz for FUZZ_NODE_SECONDS (20 s)
#   make fuzz-node-replay    replay seeds + found corpus through fuzz/standalone.c ($(CC))
#   make fuzz-node-long      fuzz for FUZZ_NODE_LONG_SECONDS (600 s)
#   make fuzz-open...        the same four for fuzz/fuzz_open.c: open a database whose
#                            files were corrupted, read everything, write, close
#                            (FUZZ_OPEN_SECONDS, FUZZ_OPEN_LONG_SECONDS)
#   make fuzz-wal...         the same four for fuzz/fuzz_wal.c: log segments written from
#                            the input as framed records with valid CRCs (generated
#                            transactions, raw bodies, torn tails), open = recovery,
#                            read, check, write, close, reopen
#                            (FUZZ_WAL_SECONDS, FUZZ_WAL_LONG_SECONDS)
#   make fuzz-manifest...    the same four for fuzz/fuzz_manifest.c: the newest MANIFEST
#                            (stores, prepared txns, segment accounting, registry run)
#                            edited or replaced by the input, re-checksummed, next to
#                            real segments; open, read, check, write, close, reopen
#                            (FUZZ_MANIFEST_SECONDS, FUZZ_MANIFEST_LONG_SECONDS)
#   make fuzz-engine-smoke   every smoke run above
#
# fuzz_node links only the node module (node, util, errors, alloc); fuzz_open, fuzz_wal
# and fuzz_manifest link every src/*.c. The -replay variants of wal and manifest also
# replay their reproducers in fuzz/regressions/ (wal-*, manifest-*).

FUZZ_NODE_LIB       := src/node.c src/util.c src/errors.c src/alloc.c
FUZZ_NODE_DEPS      := $(FUZZ_NODE_LIB) $(wildcard src/*.h src/*.def include/*.h)
FUZZ_NODE_SEEDS     := $(FUZZ_DIR)/corpus-node-seed
FUZZ_NODE_CORPUS    := $(FUZZ_DIR)/corpus-node
FUZZ_NODE_SECONDS   ?= 20
FUZZ_NODE_LONG_SECONDS ?= 600
FUZZ_NODE_RUN       := -max_len=70000 -timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/node-

FUZZ_OPEN_LIB       := $(wildcard src/*.c)
FUZZ_OPEN_DEPS      := $(FUZZ_OPEN_LIB) $(wildcard src/*.h src/*.def include/*.h)
FUZZ_OPEN_SEEDS     := $(FUZZ_DIR)/corpus-open-seed
FUZZ_OPEN_CORPUS    := $(FUZZ_DIR)/corpus-open
FUZZ_OPEN_SECONDS   ?= 20
FUZZ_OPEN_LONG_SECONDS ?= 600
FUZZ_OPEN_RUN       := -max_len=448 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
                       -artifact_prefix=$(FUZZ_DIR)/open-

.PHONY: fuzz-node fuzz-node-seeds fuzz-node-smoke fuzz-node-replay fuzz-node-long \
        fuzz-open fuzz-open-seeds fuzz-open-smoke fuzz-open-replay fuzz-open-long \
        fuzz-wal fuzz-wal-seeds fuzz-wal-smoke fuzz-wal-replay fuzz-wal-long \
        fuzz-manifest fuzz-manifest-seeds fuzz-manifest-smoke fuzz-manifest-replay \
        fuzz-manifest-long fuzz-engine-smoke

# ---- node ----------------------------------------------------------------------------

fuzz-node: $(FUZZ_DIR)/fuzz_node

$(FUZZ_DIR)/fuzz_node: fuzz/fuzz_node.c $(FUZZ_NODE_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) fuzz/fuzz_node.c $(FUZZ_NODE_LIB) -o $@

$(FUZZ_DIR)/fuzz_node_standalone: fuzz/fuzz_node.c fuzz/standalone.c $(FUZZ_NODE_DEPS)
	@mkdir -p $(@D)
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_STANDALONE_SAN) fuzz/standalone.c fuzz/fuzz_node.c \
	    $(FUZZ_NODE_LIB) -o $@

fuzz-node-seeds: $(FUZZ_DIR)/fuzz_node_standalone
	@rm -rf $(FUZZ_NODE_SEEDS)
	$(FUZZ_DIR)/fuzz_node_standalone --write-seeds $(FUZZ_NODE_SEEDS)

fuzz-node-replay: fuzz-node-seeds
	@mkdir -p $(FUZZ_NODE_CORPUS)
	$(FUZZ_DIR)/fuzz_node_standalone $(FUZZ_NODE_SEEDS) $(FUZZ_NODE_CORPUS)

fuzz-node-smoke: $(FUZZ_DIR)/fuzz_node fuzz-node-seeds
	@mkdir -p $(FUZZ_NODE_CORPUS)
	$(FUZZ_DIR)/fuzz_node $(FUZZ_NODE_RUN) -max_total_time=$(FUZZ_NODE_SECONDS) \
	    $(FUZZ_NODE_CORPUS) $(FUZZ_NODE_SEEDS)

fuzz-node-long: $(FUZZ_DIR)/fuzz_node fuzz-node-seeds
	@mkdir -p $(FUZZ_NODE_CORPUS)
	$(FUZZ_DIR)/fuzz_node $(FUZZ_NODE_RUN) -max_total_time=$(FUZZ_NODE_LONG_SECONDS) \
	    $(FUZZ_NODE_CORPUS) $(FUZZ_NODE_SEEDS)

# ---- open a corrupted database ---------------------------------------------------------

fuzz-open: $(FUZZ_DIR)/fuzz_open

$(FUZZ_DIR)/fuzz_open: fuzz/fuzz_open.c $(FUZZ_OPEN_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) fuzz/fuzz_open.c $(FUZZ_OPEN_LIB) -o $@

$(FUZZ_DIR)/fuzz_open_standalone: fuzz/fuzz_open.c fuzz/standalone.c $(FUZZ_OPEN_DEPS)
	@mkdir -p $(@D)
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_STANDALONE_SAN) fuzz/standalone.c fuzz/fuzz_open.c \
	    $(FUZZ_OPEN_LIB) -o $@

fuzz-open-seeds: $(FUZZ_DIR)/fuzz_open_standalone
	@rm -rf $(FUZZ_OPEN_SEEDS)
	$(FUZZ_DIR)/fuzz_open_standalone --write-seeds $(FUZZ_OPEN_SEEDS)

fuzz-open-replay: fuzz-open-seeds
	@mkdir -p $(FUZZ_OPEN_CORPUS)
	$(FUZZ_DIR)/fuzz_open_standalone $(FUZZ_OPEN_SEEDS) $(FUZZ_OPEN_CORPUS)

fuzz-open-smoke: $(FUZZ_DIR)/fuzz_open fuzz-open-seeds
	@mkdir -p $(FUZZ_OPEN_CORPUS)
	$(FUZZ_DIR)/fuzz_open $(FUZZ_OPEN_RUN) -max_total_time=$(FUZZ_OPEN_SECONDS) \
	    $(FUZZ_OPEN_CORPUS) $(FUZZ_OPEN_SEEDS)

fuzz-open-long: $(FUZZ_DIR)/fuzz_open fuzz-open-seeds
	@mkdir -p $(FUZZ_OPEN_CORPUS)
	$(FUZZ_DIR)/fuzz_open $(FUZZ_OPEN_RUN) -max_total_time=$(FUZZ_OPEN_LONG_SECONDS) \
	    $(FUZZ_OPEN_CORPUS) $(FUZZ_OPEN_SEEDS)

# ---- the log: recovery over records framed from the input ------------------------------

FUZZ_WAL_SEEDS      := $(FUZZ_DIR)/corpus-wal-seed
FUZZ_WAL_CORPUS     := $(FUZZ_DIR)/corpus-wal
FUZZ_WAL_SECONDS    ?= 20
FUZZ_WAL_LONG_SECONDS ?= 600
FUZZ_WAL_RUN        := -max_len=4096 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
                       -artifact_prefix=$(FUZZ_DIR)/wal-

fuzz-wal: $(FUZZ_DIR)/fuzz_wal

$(FUZZ_DIR)/fuzz_wal: fuzz/fuzz_wal.c $(FUZZ_OPEN_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) fuzz/fuzz_wal.c $(FUZZ_OPEN_LIB) -o $@

$(FUZZ_DIR)/fuzz_wal_standalone: fuzz/fuzz_wal.c fuzz/standalone.c $(FUZZ_OPEN_DEPS)
	@mkdir -p $(@D)
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_STANDALONE_SAN) fuzz/standalone.c fuzz/fuzz_wal.c \
	    $(FUZZ_OPEN_LIB) -o $@

fuzz-wal-seeds: $(FUZZ_DIR)/fuzz_wal_standalone
	@rm -rf $(FUZZ_WAL_SEEDS)
	$(FUZZ_DIR)/fuzz_wal_standalone --write-seeds $(FUZZ_WAL_SEEDS)

fuzz-wal-replay: fuzz-wal-seeds
	@mkdir -p $(FUZZ_WAL_CORPUS)
	$(FUZZ_DIR)/fuzz_wal_standalone $(FUZZ_WAL_SEEDS) $(FUZZ_WAL_CORPUS) \
	    $(wildcard fuzz/regressions/wal-*)

fuzz-wal-smoke: $(FUZZ_DIR)/fuzz_wal fuzz-wal-seeds
	@mkdir -p $(FUZZ_WAL_CORPUS)
	$(FUZZ_DIR)/fuzz_wal $(FUZZ_WAL_RUN) -max_total_time=$(FUZZ_WAL_SECONDS) \
	    $(FUZZ_WAL_CORPUS) $(FUZZ_WAL_SEEDS)

fuzz-wal-long: $(FUZZ_DIR)/fuzz_wal fuzz-wal-seeds
	@mkdir -p $(FUZZ_WAL_CORPUS)
	$(FUZZ_DIR)/fuzz_wal $(FUZZ_WAL_RUN) -max_total_time=$(FUZZ_WAL_LONG_SECONDS) \
	    $(FUZZ_WAL_CORPUS) $(FUZZ_WAL_SEEDS)

# ---- the manifest and its registry run ------------------------------------------------

FUZZ_MANIFEST_SEEDS   := $(FUZZ_DIR)/corpus-manifest-seed
FUZZ_MANIFEST_CORPUS  := $(FUZZ_DIR)/corpus-manifest
FUZZ_MANIFEST_SECONDS ?= 20
FUZZ_MANIFEST_LONG_SECONDS ?= 600
FUZZ_MANIFEST_RUN     := -max_len=8192 -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
                         -artifact_prefix=$(FUZZ_DIR)/manifest-

fuzz-manifest: $(FUZZ_DIR)/fuzz_manifest

$(FUZZ_DIR)/fuzz_manifest: fuzz/fuzz_manifest.c $(FUZZ_OPEN_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) fuzz/fuzz_manifest.c $(FUZZ_OPEN_LIB) -o $@

$(FUZZ_DIR)/fuzz_manifest_standalone: fuzz/fuzz_manifest.c fuzz/standalone.c $(FUZZ_OPEN_DEPS)
	@mkdir -p $(@D)
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_STANDALONE_SAN) fuzz/standalone.c fuzz/fuzz_manifest.c \
	    $(FUZZ_OPEN_LIB) -o $@

fuzz-manifest-seeds: $(FUZZ_DIR)/fuzz_manifest_standalone
	@rm -rf $(FUZZ_MANIFEST_SEEDS)
	$(FUZZ_DIR)/fuzz_manifest_standalone --write-seeds $(FUZZ_MANIFEST_SEEDS)

fuzz-manifest-replay: fuzz-manifest-seeds
	@mkdir -p $(FUZZ_MANIFEST_CORPUS)
	$(FUZZ_DIR)/fuzz_manifest_standalone $(FUZZ_MANIFEST_SEEDS) $(FUZZ_MANIFEST_CORPUS) \
	    $(wildcard fuzz/regressions/manifest-*)

fuzz-manifest-smoke: $(FUZZ_DIR)/fuzz_manifest fuzz-manifest-seeds
	@mkdir -p $(FUZZ_MANIFEST_CORPUS)
	$(FUZZ_DIR)/fuzz_manifest $(FUZZ_MANIFEST_RUN) -max_total_time=$(FUZZ_MANIFEST_SECONDS) \
	    $(FUZZ_MANIFEST_CORPUS) $(FUZZ_MANIFEST_SEEDS)

fuzz-manifest-long: $(FUZZ_DIR)/fuzz_manifest fuzz-manifest-seeds
	@mkdir -p $(FUZZ_MANIFEST_CORPUS)
	$(FUZZ_DIR)/fuzz_manifest $(FUZZ_MANIFEST_RUN) \
	    -max_total_time=$(FUZZ_MANIFEST_LONG_SECONDS) $(FUZZ_MANIFEST_CORPUS) $(FUZZ_MANIFEST_SEEDS)

fuzz-engine-smoke: fuzz-node-smoke fuzz-open-smoke fuzz-wal-smoke fuzz-manifest-smoke
