# bench/bench.mk: build rules for the benchmark tools, included from the
# top-level Makefile.  Owns esockd-bench (bench/loadgen.c, the load
# generator) and esockd-bench-echo (bench/echo-fast.c, the fast echo
# server).  Both need only libc and pthreads.
#
# Standalone use (writes nothing under ./build):
#   make -f bench/bench.mk BUILD=/tmp/benchbuild bench-tools

# Defaults for standalone use only; the top-level Makefile sets its own.
BUILD	?= build
CC	?= cc
CFLAGS	?= -O2 -g
WFLAGS	?= -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -D_GNU_SOURCE

# Included, this file must not steal the default goal (`all`) from the
# top-level Makefile: remember it here and restore it at the end.  If it
# is still empty, restoring the empty value lets the next target defined
# after the include become the default, as it would without us.  Alone
# (`make -f bench/bench.mk`), bench-tools is the default.
bench_standalone := $(filter 1,$(words $(MAKEFILE_LIST)))
bench_saved_goal := $(.DEFAULT_GOAL)

BENCH_BINS = $(BUILD)/esockd-bench $(BUILD)/esockd-bench-echo \
	     $(BUILD)/esockd-bench-tls

.PHONY: bench-tools
bench-tools: $(BENCH_BINS)

$(BUILD)/esockd-bench: bench/loadgen.c bench/common.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) -o $@ $< -lpthread -lm

$(BUILD)/esockd-bench-echo: bench/echo-fast.c bench/common.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) -o $@ $< -lpthread -lm

$(BUILD)/esockd-bench-tls: bench/tlsgen.c bench/common.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) -o $@ $< -lssl -lcrypto -lpthread

ifeq ($(bench_standalone),)
.DEFAULT_GOAL := $(bench_saved_goal)
endif
