# tests/torture.mk - long torture campaigns; the top-level Makefile does
# `-include tests/torture.mk` (until it does: make -f Makefile -f tests/torture.mk torture).
#
#   make torture [SEED=1] [COUNT=10000] [KILLS=COUNT/10] [LIFECYCLES=COUNT/1000]
#                [CAMPAIGNS=powerloss,kill,fault,alloc,blobkill,blobpower,2pc,newest]
#                [TORTURE_VARIANT=release]
#       COUNT simulated power cuts (test_powerloss), KILLS SIGKILLs (test_crash),
#       and the fail-the-Nth-VFS-call and fail-the-Nth-allocation sweeps over
#       LIFECYCLES lifecycles each (test_fault, test_alloc); KILLS/2 SIGKILLs and
#       COUNT/20 power cuts of threaded blob writers with a checkpoint thread
#       (test_blobcrash), COUNT/500 crash rounds of 2PC histories (test_2pc),
#       COUNT/20 random damages of the newest segment per template
#       (test_newest); one summary line per
#       campaign ("torture <name>: cases, failures, acknowledged commits checked");
#       the exit status is non-zero if any campaign failed.
#       TORTURE_VARIANT=asan runs them under AddressSanitizer + UBSan (about 5x
#       slower).
#   make torture-fuzz [FUZZ_MINUTES=10]
#       every fuzzer (keys, node, open) for FUZZ_MINUTES each (fuzz/fuzz.mk,
#       fuzz/fuzz_engine.mk).
#
# The short versions of the same campaigns run in `make test`.

TORTURE_VARIANT ?= release
TORTURE_BUILD   := build/$(TORTURE_VARIANT)
SEED            ?= 1
COUNT           ?= 10000
CAMPAIGNS       ?= powerloss,kill,fault,alloc,blobkill,blobpower,2pc,newest
FUZZ_MINUTES    ?= 10
TORTURE_ARGS     = --bin-dir $(TORTURE_BUILD)/tests --seed $(SEED) --count $(COUNT) \
                   --campaigns $(CAMPAIGNS) $(if $(KILLS),--kills $(KILLS)) \
                   $(if $(LIFECYCLES),--lifecycles $(LIFECYCLES))

.PHONY: torture torture-fuzz

$(TORTURE_BUILD)/torture: tests/torture.c
	@mkdir -p $(@D)
	$(CC) -std=c11 -D_GNU_SOURCE -DSOP_TORTURE_MAIN -O2 -g -Wall -Wextra -Werror \
	    tests/torture.c -o $@

torture: deps $(TORTURE_BUILD)/torture
	@$(MAKE) --no-print-directory VARIANT=$(TORTURE_VARIANT) \
	    $(TORTURE_BUILD)/tests/test_powerloss $(TORTURE_BUILD)/tests/test_crash \
	    $(TORTURE_BUILD)/tests/test_fault $(TORTURE_BUILD)/tests/test_alloc \
	    $(TORTURE_BUILD)/tests/test_blobcrash $(TORTURE_BUILD)/tests/test_2pc \
	    $(TORTURE_BUILD)/tests/test_newest
	$(TORTURE_BUILD)/torture $(TORTURE_ARGS)

torture-fuzz:
	@$(MAKE) --no-print-directory fuzz-keys-long FUZZ_KEYS_LONG_SECONDS=$$(( $(FUZZ_MINUTES) * 60 ))
	@$(MAKE) --no-print-directory fuzz-node-long FUZZ_NODE_LONG_SECONDS=$$(( $(FUZZ_MINUTES) * 60 ))
	@$(MAKE) --no-print-directory fuzz-open-long FUZZ_OPEN_LONG_SECONDS=$$(( $(FUZZ_MINUTES) * 60 ))
