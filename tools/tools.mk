# tools/tools.mk - the `sop` command-line tool; the top-level Makefile does
# `-include tools/tools.mk` and hooks `tools` into all/test and
# `install-tools` into install.
#
#   make tools           build $(BUILD)/tools/sop (linked with the static libsop.a)
#   make install-tools   install it as $(DESTDIR)$(PREFIX)/bin/sop

TOOLS_SRCS := tools/sop.c tools/json.c
TOOLS_HDRS := $(wildcard tools/*.h) $(wildcard include/*.h)

.PHONY: tools install-tools

tools: $(BUILD)/tools/sop

$(BUILD)/tools/sop: $(TOOLS_SRCS) $(TOOLS_HDRS) $(BUILD)/libsop.a
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -Itools $(TOOLS_SRCS) $(BUILD)/libsop.a -o $@ $(LDLIBS)

# The shell-level tests (tests/test_cli.c runs tests/test_cli.sh) need the binary.
$(BUILD)/tests/test_cli: $(BUILD)/tools/sop

install-tools: $(BUILD)/tools/sop
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 755 $(BUILD)/tools/sop $(DESTDIR)$(PREFIX)/bin/sop
