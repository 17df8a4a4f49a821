# fuzz/fuzz.mk - fuzz targets; the top-level Makefile does `-include fuzz/fuzz.mk`.
#
#   make fuzz-keys           build build/fuzz/fuzz_keys (clang, libFuzzer + ASan + UBSan)
#   make fuzz-keys-smoke     write the seed corpus, then fuzz for FUZZ_KEYS_SECONDS (20 s);
#                            new inputs land in build/fuzz/corpus-keys
#   make fuzz-keys-replay    replay seeds + found corpus through fuzz/standalone.c, built
#                            with $(CC) (gcc is fine): no libFuzzer needed
#   make fuzz-keys-long      the same fuzzing for an hour (FUZZ_KEYS_LONG_SECONDS)
#
# The target links only the sources the key module needs (keys, util, errors,
# alloc), so it builds while the rest of the engine is in flux.

FUZZ_CC       ?= clang
FUZZ_DIR      := build/fuzz
FUZZ_WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
FUZZ_CFLAGS   := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -pthread \
                 -Iinclude -Isrc $(FUZZ_WARN)
FUZZ_SAN      := -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_STANDALONE_SAN ?= -fsanitize=address,undefined -fno-sanitize-recover=undefined

FUZZ_KEYS_LIB      := src/keys.c src/util.c src/errors.c src/alloc.c
FUZZ_KEYS_DEPS     := $(FUZZ_KEYS_LIB) $(wildcard src/*.h src/*.def include/*.h)
FUZZ_KEYS_SEEDS    := $(FUZZ_DIR)/corpus-keys-seed
FUZZ_KEYS_CORPUS   := $(FUZZ_DIR)/corpus-keys
FUZZ_KEYS_SECONDS  ?= 20
FUZZ_KEYS_LONG_SECONDS ?= 3600
FUZZ_KEYS_RUN      := -max_len=4300 -timeout=10 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/

.PHONY: fuzz-deps fuzz-keys fuzz-keys-seeds fuzz-keys-smoke fuzz-keys-replay fuzz-keys-long

fuzz-deps:
	@scripts/deps.sh fuzz

fuzz-keys: $(FUZZ_DIR)/fuzz_keys

$(FUZZ_DIR)/fuzz_keys: fuzz/fuzz_keys.c $(FUZZ_KEYS_DEPS) | fuzz-deps
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_SAN) fuzz/fuzz_keys.c $(FUZZ_KEYS_LIB) -o $@

$(FUZZ_DIR)/fuzz_keys_standalone: fuzz/fuzz_keys.c fuzz/standalone.c $(FUZZ_KEYS_DEPS)
	@mkdir -p $(@D)
	$(CC) $(FUZZ_CFLAGS) $(FUZZ_STANDALONE_SAN) fuzz/standalone.c fuzz/fuzz_keys.c \
	    $(FUZZ_KEYS_LIB) -o $@

fuzz-keys-seeds: $(FUZZ_DIR)/fuzz_keys_standalone
	@rm -rf $(FUZZ_KEYS_SEEDS)
	$(FUZZ_DIR)/fuzz_keys_standalone --write-seeds $(FUZZ_KEYS_SEEDS)

# fuzz/regressions/ holds every input that once crashed a target: replayed always.
fuzz-keys-replay: fuzz-keys-seeds
	@mkdir -p $(FUZZ_KEYS_CORPUS)
	$(FUZZ_DIR)/fuzz_keys_standalone $(FUZZ_KEYS_SEEDS) $(FUZZ_KEYS_CORPUS) fuzz/regressions

# In make test the mutation sequence is seeded (FUZZ_SEED) so a run can be
# repeated; fuzz-keys-long explores with a fresh seed.
FUZZ_SEED ?= 1
fuzz-keys-smoke: $(FUZZ_DIR)/fuzz_keys fuzz-keys-seeds
	@mkdir -p $(FUZZ_KEYS_CORPUS)
	$(FUZZ_DIR)/fuzz_keys $(FUZZ_KEYS_RUN) -seed=$(FUZZ_SEED) -max_total_time=$(FUZZ_KEYS_SECONDS) \
	    $(FUZZ_KEYS_CORPUS) $(FUZZ_KEYS_SEEDS) fuzz/regressions

fuzz-keys-long: $(FUZZ_DIR)/fuzz_keys fuzz-keys-seeds
	@mkdir -p $(FUZZ_KEYS_CORPUS)
	$(FUZZ_DIR)/fuzz_keys $(FUZZ_KEYS_RUN) -max_total_time=$(FUZZ_KEYS_LONG_SECONDS) \
	    $(FUZZ_KEYS_CORPUS) $(FUZZ_KEYS_SEEDS)
