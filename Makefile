# esockd: top-level build.  `make` builds build/esockd and the example
# handler; `make check` runs every test; `make run` starts the demo.

CC	?= cc
PKGS	 = libevent libconfig libsystemd openssl
CFLAGS	?= -O2 -g
# Always applied, even when CFLAGS is set on the command line.
WFLAGS	 = -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -D_GNU_SOURCE \
	   -fno-strict-aliasing
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

BUILD	?= build
PREFIX	?= /usr/local

# Everything but main(): linked into the daemon and the unit tests.
LIB_SRCS = src/log.c src/addr.c src/config.c src/shm.c src/listener.c \
	   src/supervise.c src/master.c src/worker.c src/accept.c \
	   src/session.c src/backend.c src/relay.c src/splice_pool.c src/handoff.c \
	   src/notify.c src/activation.c src/stats.c src/control.c src/oneshot.c \
	   src/ctlcmd.c src/ctlproto.c src/metrics.c src/proxy_proto.c \
	   src/proxy_in.c src/proxy_header.c src/cidr.c src/source_count.c \
	   src/tls.c src/tls_ctx.c src/tls_policy.c \
	   src/evlog.c src/reload.c src/proc.c src/sni_match.c src/tls_tickets.c \
	   src/netstat.c src/early_drop.c src/hs_budget.c src/backend_health.c
LIB_OBJS = $(LIB_SRCS:src/%.c=$(BUILD)/obj/%.o)

UNIT_SRCS = $(wildcard tests/unit/test_*.c)
UNIT_BINS = $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)

# Debian packages for building, testing and running the demo.
# systemd: systemd-analyze and systemd-socket-activate for the tests (not
# to run systemd); man-db: systemd-analyze verify checks Documentation=.
# clang and libclang-rt-dev (libFuzzer and the sanitizers' runtimes, only
# recommended by clang): the fuzz targets.  valgrind: make valgrind.
DEB_PKGS = build-essential pkg-config libevent-dev libconfig-dev \
	   libsystemd-dev libssl-dev libcmocka-dev python3-pytest \
	   mandoc netcat-openbsd systemd man-db haproxy openssl \
	   clang libclang-rt-dev valgrind
SUDO	:= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps check unit integration sanitize valgrind man-lint run demo-cert \
	bench clean torture torture-short \
	install uninstall fuzz fuzz-short fuzz-build fuzz-one

all: $(BUILD)/esockd $(BUILD)/echo-handler $(BUILD)/esockdctl

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/esockd: $(BUILD)/obj/esockd.o $(LIB_OBJS)
	$(CC) $(CFLAGS) $(WFLAGS) -o $@ $^ $(LDFLAGS) $(PKG_LIBS)

# The control client needs only the config parser and what it uses, and
# the protocol's table: the parsed config holds no TLS state and
# ctlproto.c no libevent, so no OpenSSL and no libevent.
CTL_OBJS = $(addprefix $(BUILD)/obj/,esockdctl.o ctlproto.o config.o log.o \
	   addr.o cidr.o early_drop.o)
$(BUILD)/esockdctl: $(CTL_OBJS)
	$(CC) $(CFLAGS) $(WFLAGS) -o $@ $^ $(LDFLAGS) \
		$(shell pkg-config --libs libconfig 2>/dev/null)

$(BUILD)/echo-handler: examples/echo-handler.c examples/handoff.c examples/handoff.h
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) $(PKG_CFLAGS) -o $@ $(filter %.c,$^) $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(LIB_OBJS)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(WFLAGS) $(PKG_CFLAGS) -Isrc -o $@ $^ $(LDFLAGS) $(PKG_LIBS) \
		-lcmocka

# Install what is missing, and only that (dpkg-query is cheap).
deps:
	@missing=""; for p in $(DEB_PKGS); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
			grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends $$missing; \
	fi

unit: $(UNIT_BINS)
	@for t in $(UNIT_BINS); do echo "== $$t"; $$t || exit 1; done

integration: all
	pytest-3 -q tests/integration

# The same suites against an AddressSanitizer + UBSan build.
SAN_FLAGS = -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	    -fno-sanitize-recover=undefined
# libconfig's own leak on a syntax error (tests/fuzz/lsan.supp says which)
# is not esockd's: the unit tests parse bad configs in their own process.
LSAN_SUPP = LSAN_OPTIONS=suppressions=$(CURDIR)/tests/fuzz/lsan.supp
sanitize:
	$(LSAN_SUPP) $(MAKE) BUILD=$(BUILD)/san CFLAGS="$(SAN_FLAGS)" all unit
	$(LSAN_SUPP) \
	ESOCKD_BIN=$(CURDIR)/$(BUILD)/san/esockd \
	ECHO_HANDLER_BIN=$(CURDIR)/$(BUILD)/san/echo-handler \
	ESOCKDCTL_BIN=$(CURDIR)/$(BUILD)/san/esockdctl \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		pytest-3 -q tests/integration

# The integration suite with every esockd it starts under Valgrind memcheck
# (tests/integration/esockd_helpers.py puts $$ESOCKD_WRAPPER before the
# binary; workers are forks, which valgrind follows).  One log per pid in
# $(BUILD)/valgrind/; tests/valgrind/summarize.py lists each process's
# errors and definite leaks and the first stack of each distinct one, and
# fails the target if any is left.  Third-party findings are suppressed in
# tests/valgrind/esockd.supp, each with its reason.  Waits are stretched by
# VALGRIND_SCALE; the few timing-sensitive tests skip themselves, saying
# why.  About 9 minutes for the whole suite on two shared cores (the data
# path is splice, which valgrind does not slow); TESTS picks files, e.g.
# make valgrind TESTS="tests/integration/test_echo.py".  Not part of make
# check.
TESTS		?= tests/integration
VALGRIND_SCALE	?= 8
VALGRIND_DIR	 = $(CURDIR)/$(BUILD)/valgrind
VALGRIND_CMD	 = valgrind --tool=memcheck --trace-children=yes \
		   --error-exitcode=97 --leak-check=full \
		   --errors-for-leak-kinds=definite --show-leak-kinds=definite \
		   --num-callers=30 --suppressions=$(CURDIR)/tests/valgrind/esockd.supp \
		   --log-file=$(VALGRIND_DIR)/%p.log
valgrind: all bench-tools
	@command -v valgrind >/dev/null || { echo "valgrind: not installed (make deps)"; exit 1; }
	@# 1777: the privilege tests start esockd as another user.
	rm -rf $(VALGRIND_DIR) && mkdir -p $(VALGRIND_DIR) && chmod 1777 $(VALGRIND_DIR)
	@ESOCKD_WRAPPER="$(VALGRIND_CMD)" ESOCKD_TIME_SCALE=$(VALGRIND_SCALE) \
		pytest-3 -q -rs $(TESTS); tests=$$?; \
	python3 tests/valgrind/summarize.py $(VALGRIND_DIR); vg=$$?; \
	[ $$tests -eq 0 ] || echo "valgrind: the tests failed under valgrind (status $$tests)"; \
	[ $$tests -eq 0 ] && [ $$vg -eq 0 ]

# libFuzzer targets for the pure parsers (tests/fuzz/), built by clang
# under ASan and UBSan into $(BUILD)/fuzz/, each with only the sources it
# needs.  `make fuzz` runs each for FUZZ_SECONDS, `make fuzz-short` (part
# of `make check`) for 15 s.  Each starts from a copy of its seeds
# (tests/fuzz/corpus/TARGET/) in $(BUILD)/fuzz/corpus/TARGET/, where what
# it finds is kept between runs: nothing is written into the source tree.
# A crash stops the run with the input in $(BUILD)/fuzz/crash/; once
# fixed, that input goes into the seeds.  One target at a time, one
# process each: the machine is shared.
FUZZ_CC		?= clang
FUZZ_SECONDS	?= 300
FUZZ_FLAGS	 = -g -O1 -fsanitize=fuzzer,address,undefined \
		   -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_TARGETS	 = fuzz_proxy_in fuzz_cidr fuzz_proxy_tlv fuzz_config
FUZZ_SRCS_fuzz_proxy_in	 = src/proxy_in.c src/proxy_proto.c
FUZZ_SRCS_fuzz_proxy_tlv = src/proxy_in.c src/proxy_proto.c
FUZZ_SRCS_fuzz_cidr	 = src/cidr.c
FUZZ_SRCS_fuzz_config	 = src/config.c src/addr.c src/cidr.c src/log.c \
			   src/early_drop.c
FUZZ_LIBS_fuzz_config	 = $(shell pkg-config --libs libconfig 2>/dev/null)
# Inputs as long as the longest header and some client bytes after it.
FUZZ_OPTS_fuzz_proxy_in	 = -max_len=4200
FUZZ_OPTS_fuzz_proxy_tlv = -max_len=4200
FUZZ_OPTS_fuzz_config	 = -max_len=8192
# libconfig's own leak on a syntax error, and only that (see the file).
FUZZ_ENV_fuzz_config	 = $(LSAN_SUPP)
FUZZ_BINS	 = $(FUZZ_TARGETS:%=$(BUILD)/fuzz/%)

define FUZZ_RULE
$(BUILD)/fuzz/$(1): tests/fuzz/$(1).c $(FUZZ_SRCS_$(1)) $(wildcard src/*.h)
	@mkdir -p $$(@D)
	$(FUZZ_CC) $(FUZZ_FLAGS) $(WFLAGS) -Isrc -o $$@ $$< $(FUZZ_SRCS_$(1)) \
		$(FUZZ_LIBS_$(1))
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RULE,$(t))))

fuzz-build: $(FUZZ_BINS)

# Run each target for $(1) seconds; print how many code points it has,
# libFuzzer's final coverage line and its stats (executions, rate, new
# inputs, peak memory).
define FUZZ_RUN
	@for t in $(FUZZ_TARGETS); do \
		work=$(BUILD)/fuzz/corpus/$$t; \
		mkdir -p $$work $(BUILD)/fuzz/crash && \
		cp -n tests/fuzz/corpus/$$t/* $$work/ || exit 1; \
		echo "== $$t: $(1) s from $$(ls $$work | wc -l) inputs"; \
		$(MAKE) -s --no-print-directory fuzz-one T=$$t S=$(1) || exit 1; \
	done
endef

# One target: T, for S seconds.
fuzz-one: $(BUILD)/fuzz/$(T)
	@log=$(BUILD)/fuzz/$(T).log; \
	if ! $(FUZZ_ENV_$(T)) $(BUILD)/fuzz/$(T) $(FUZZ_OPTS_$(T)) \
	    -max_total_time=$(S) -print_final_stats=1 -timeout=10 \
	    -artifact_prefix=$(BUILD)/fuzz/crash/$(T)- \
	    $(BUILD)/fuzz/corpus/$(T) >$$log 2>&1; then \
		tail -n 60 $$log; \
		echo "$(T): FAILED; the input is in $(BUILD)/fuzz/crash/"; \
		exit 1; \
	fi; \
	grep -m 1 -o 'PC tables ([0-9]* PCs)' $$log | \
		sed 's/PC tables (\(.*\))/instrumented: \1 (cov: counts those reached)/'; \
	grep -E '^#[0-9]+[[:space:]]+DONE' $$log | tail -n 1; \
	grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' $$log

fuzz: fuzz-build
	$(call FUZZ_RUN,$(FUZZ_SECONDS))

fuzz-short: fuzz-build
	$(call FUZZ_RUN,15)

# Warnings and errors only: "style" notes depend on the host's man database.
man-lint:
	mandoc -Tlint -W warning man/esockd.8 man/esockd.conf.5 man/esockdctl.8

check: deps
	$(MAKE) man-lint
	$(MAKE) all unit bench-tools
	$(MAKE) fuzz-short
	$(MAKE) integration
	$(MAKE) torture-short
	$(MAKE) sanitize

# The torture suite (tests/torture/): faults under load, byte-exact and
# counted.  torture-short is each scenario's short form (in make check);
# torture runs them at full length, plain and then under ASan + UBSan,
# and writes tests/torture/RESULTS.md with the figures and the commit.
TORTURE_OUT = $(CURDIR)/$(BUILD)/torture/results.jsonl
torture-short: all
	pytest-3 -q tests/torture

torture: all
	@mkdir -p $(BUILD)/torture
	rm -f $(TORTURE_OUT)
	TORTURE_RESULTS=$(TORTURE_OUT) TORTURE_BUILD=plain \
		pytest-3 -q --long tests/torture
	$(MAKE) BUILD=$(BUILD)/san CFLAGS="$(SAN_FLAGS)" all
	ESOCKD_BIN=$(CURDIR)/$(BUILD)/san/esockd \
	ECHO_HANDLER_BIN=$(CURDIR)/$(BUILD)/san/echo-handler \
	ESOCKDCTL_BIN=$(CURDIR)/$(BUILD)/san/esockdctl \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	TORTURE_RESULTS=$(TORTURE_OUT) TORTURE_BUILD=asan \
		pytest-3 -q --long tests/torture
	python3 tests/torture/report.py $(TORTURE_OUT) \
		"$$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		> tests/torture/RESULTS.md

# The demo: the echo handler on the socket conf/esockd.conf names, and
# esockd in the foreground. Ctrl-C stops both.
DEMO_SOCK = /tmp/esockd-echo.sock
# The TLS listener's certificate (127.0.0.1:5001): made on the first run,
# and again once it has expired; self-signed, for localhost and 127.0.0.1.
DEMO_TLS = /tmp/esockd-demo
demo-cert:
	@mkdir -p $(DEMO_TLS) && chmod 700 $(DEMO_TLS)
	@if ! openssl x509 -in $(DEMO_TLS)/cert.pem -noout -checkend 0 \
	    >/dev/null 2>&1; then \
		echo "demo: making a certificate in $(DEMO_TLS)"; \
		openssl req -x509 -newkey ec -pkeyopt \
		    ec_paramgen_curve:prime256v1 -nodes -days 30 \
		    -subj /CN=localhost -addext \
		    subjectAltName=DNS:localhost,IP:127.0.0.1 \
		    -keyout $(DEMO_TLS)/key.pem -out $(DEMO_TLS)/cert.pem \
		    2>/dev/null || exit 1; \
		chmod 600 $(DEMO_TLS)/key.pem; \
	fi

run: deps all demo-cert
	@echo "demo: echo handler on $(DEMO_SOCK), esockd on 127.0.0.1:5000"
	@echo "demo: try   nc 127.0.0.1 5000   (Ctrl-C stops both)"
	@echo "demo: and TLS on 127.0.0.1:5001:"
	@echo "demo:       openssl s_client -connect 127.0.0.1:5001 -quiet \\"
	@echo "demo:           -CAfile $(DEMO_TLS)/cert.pem -verify_hostname localhost"
	@$(BUILD)/echo-handler -s $(DEMO_SOCK) & hpid=$$!; \
	trap 'kill $$hpid 2>/dev/null; wait $$hpid 2>/dev/null' EXIT; \
	trap 'exit 0' INT TERM; \
	$(BUILD)/esockd -c conf/esockd.conf

# Benchmarks against HAProxy and nginx (bench/run.sh installs them).
# Never part of `make check`: a benchmark is not a test.
-include bench/bench.mk
bench: deps all bench-tools
	bash bench/run.sh

# Install.  PREFIX=/usr for a distribution package, DESTDIR to stage.
# The units get SBINDIR as the programs' path; the config always goes to
# /etc/esockd (the default of -c and the path in the unit).
SBINDIR	 = $(PREFIX)/sbin
MANDIR	 = $(PREFIX)/share/man
UNITDIR	 = $(PREFIX)/lib/systemd/system
CONFDIR	 = /etc/esockd
INSTALL	?= install
# Programs for SBINDIR.  esockdctl comes with the ctl branch: until it is
# merged no rule builds $(BUILD)/esockdctl, and install says it skips it.
# Once a rule exists the program is built and installed like esockd, and
# a failure to build it fails the install.
SBIN_PROGS = esockd esockdctl

install: all
	$(INSTALL) -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(CONFDIR)
	@for p in $(SBIN_PROGS); do \
		if ! $(MAKE) -n $(BUILD)/$$p >/dev/null 2>&1; then \
			echo "install: skipping $$p: no rule builds $(BUILD)/$$p" \
			    "yet (it comes with the ctl branch)"; \
			continue; \
		fi; \
		$(MAKE) -s --no-print-directory $(BUILD)/$$p || exit 1; \
		echo "$(INSTALL) -m 0755 $(BUILD)/$$p $(DESTDIR)$(SBINDIR)/$$p"; \
		$(INSTALL) -m 0755 $(BUILD)/$$p $(DESTDIR)$(SBINDIR)/$$p || exit 1; \
	done
	$(INSTALL) -m 0644 $(wildcard man/*.5) $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0644 $(wildcard man/*.8) $(DESTDIR)$(MANDIR)/man8
	for u in esockd.service esockd.socket; do \
		sed 's|@SBINDIR@|$(SBINDIR)|g' systemd/$$u > $(BUILD)/$$u && \
		$(INSTALL) -m 0644 $(BUILD)/$$u $(DESTDIR)$(UNITDIR)/$$u || exit 1; \
	done
	@# Never overwrite an operator's config.  The one installed is
	@# conf/system.conf (paths under /run), not the demo's (/tmp).
	@if [ -e $(DESTDIR)$(CONFDIR)/esockd.conf ]; then \
		echo "install: keeping the existing $(DESTDIR)$(CONFDIR)/esockd.conf" \
		    "(never overwritten; the starting point is conf/system.conf)"; \
	else \
		echo "$(INSTALL) -m 0644 conf/system.conf $(DESTDIR)$(CONFDIR)/esockd.conf"; \
		$(INSTALL) -m 0644 conf/system.conf $(DESTDIR)$(CONFDIR)/esockd.conf; \
	fi

# Everything install wrote except the config, which may hold local edits.
uninstall:
	rm -f $(SBIN_PROGS:%=$(DESTDIR)$(SBINDIR)/%) \
		$(patsubst man/%,$(DESTDIR)$(MANDIR)/man5/%,$(wildcard man/*.5)) \
		$(patsubst man/%,$(DESTDIR)$(MANDIR)/man8/%,$(wildcard man/*.8)) \
		$(DESTDIR)$(UNITDIR)/esockd.service $(DESTDIR)$(UNITDIR)/esockd.socket
	@echo "uninstall: $(DESTDIR)$(CONFDIR)/esockd.conf is left in place"

clean:
	rm -rf $(BUILD)
