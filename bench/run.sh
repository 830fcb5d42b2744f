#!/usr/bin/env bash
# bench/run.sh: measure esockd against HAProxy 2.6, nginx 1.22 (stream) and
# a direct connection to the echo server (the ceiling); in the TLS modes
# (tls-*) against HAProxy, nginx and stunnel terminating TLS.
#
# Every gateway relays 127.0.0.1:<free port> to the same Unix-socket echo
# backend (build/esockd-bench-echo, 2 threads) with 2 workers/threads.
# "handoff" is esockd too, with mode = "handoff": it passes each client's
# socket to a hand-off echo backend (esockd-bench-echo -H, 2 threads)
# and leaves the data path; its gateway CPU is esockd's processes, as for
# relay, and the backend's CPU is reported beside it.
#
# The shapes (modes): rate (connect, 64 B echo, close), echo64/echo1k/
# echo16k (64 connections ping-ponging 64 B, 1 KiB, 16 KiB messages),
# echo (1,000 connections, 1 KiB), stream4k/stream16k/stream/stream1m (8
# connections writing 4 KiB, 16 KiB, 64 KiB, 1 MiB chunks), latency (one
# connection ping-ponging 64 B: its p50/p99) and idle (memory).  The load
# generator (build/esockd-bench) runs each mode against each gateway in
# alternation, a fresh gateway for every run.  The order rotates each round
# (A B C D, B C D A, ...): the first rate run of a round finds the
# TIME_WAIT table emptied by the pause, the others find it full, so no
# gateway may always be first.  CPU (utime+stime) and PSS of the gateway's
# processes are sampled around each run.  Then esockd alone holds 100,000
# relayed connections ("big").  bench/report.py turns the records into
# RESULTS.md and PNG charts.
#
# Only loopback addresses and Unix sockets get traffic.  Every process
# this script starts is remembered by pid (and start time) and stopped by
# the EXIT trap, even on failure or Ctrl-C.  A missed target is not a
# failure: the exit status is non-zero only when the setup failed.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
PY=/usr/bin/python3			# Debian's: report.py needs no more
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

# ---------------------------------------------------------------- options

ROUNDS=3 DURATION=5 WARMUP=1
PLAIN_MODES=rate,echo64,echo1k,echo16k,echo,stream4k,stream16k,stream,stream1m,latency,idle
TLS_MODES=tls-rsa,tls-ecdsa,tls-resume,tls-stream,tls-idle
MODES=$PLAIN_MODES,$TLS_MODES
GATEWAYS=esockd,handoff,haproxy,nginx,direct,stunnel
BIG=1 QUICK=0 KEEP=0 SMOKE=0 BUILD=1
RETRIES=2 DISTURBED=0.15
BIN_DIR="" OUT="" LG_THREADS=""
RATE_CLIENTS=64 RATE_SOURCES=8
ECHO_CLIENTS=1000 ECHO_BYTES=1024
SHAPE_CLIENTS=64 BACKEND_THREADS=2
STREAM_CLIENTS=8
IDLE_CLIENTS=8000 IDLE_HOLD=3
TLS_HS_CLIENTS=32 TLS_STREAM_CLIENTS=4 TLS_IDLE_CLIENTS=4000
BIG_CLIENTS=100000 BIG_WORKERS=12 BIG_BACKENDS=6 BIG_PROCS=7 BIG_SOURCES=16
BIG_HOLD=5
declare -A SET=()			# options given on the command line

usage() {
	cat <<EOF
usage: bench/run.sh [options]

  --rounds N          rounds of alternation, rotated: A B C D, B C D A, ...
                      (default $ROUNDS)
  --duration S        measured seconds per run (default $DURATION)
  --warmup S          warm-up seconds before each measured run (default $WARMUP)
  --modes LIST        of the plain modes $PLAIN_MODES
                      and the TLS modes $TLS_MODES
                      (default: all); "none": only the 100k test
  --tls-only          only the TLS modes (--modes $TLS_MODES),
                      no big test unless --big is given
  --gateways LIST     of esockd,handoff,haproxy,nginx,direct,stunnel
                      (default all); handoff is esockd in hand-off mode;
                      direct and handoff run the plain modes only,
                      stunnel the TLS modes only
  --big / --no-big    the esockd 100k-connection test (default on)
  --quick             1 round, 2 s runs, 2,000 idle connections, no big
                      test unless --big is given: for trying it out
  --bin-dir DIR       where esockd-bench and esockd-bench-echo are
                      (default <repo>/build, built by make bench-tools)
  --out DIR           where RESULTS.md and the PNGs go (default <repo>/bench)
  --keep              keep the temporary directory
  --no-build          do not run make (use the binaries as they are)
  --smoke             start each gateway, check one echo through it, exit
  --retries N         run a rate/echo/stream measurement again (at most N
                      times) when other processes on the machine took more
                      than $DISTURBED cores during it (default $RETRIES)
  --disturbed CORES   that threshold (default $DISTURBED); 2 or more never
                      sets a run aside
  --lg-threads N      esockd-bench -T for the per-gateway modes
  --rate-clients N    (default $RATE_CLIENTS)     --rate-sources N (default $RATE_SOURCES)
  --echo-clients N    (default $ECHO_CLIENTS)   --echo-bytes N   (default $ECHO_BYTES)
                      (the echo mode; echo64/1k/16k use --shape-clients)
  --shape-clients N   connections of echo64, echo1k, echo16k (default $SHAPE_CLIENTS)
  --backend-threads N threads of the echo backends, relay and hand-off
                      (default $BACKEND_THREADS)
  --stream-clients N  (default $STREAM_CLIENTS)
  --idle-clients N    (default $IDLE_CLIENTS)   --idle-hold S    (default $IDLE_HOLD)
  --tls-hs-clients N  (default $TLS_HS_CLIENTS)     --tls-stream-clients N (default $TLS_STREAM_CLIENTS)
  --tls-idle-clients N (default $TLS_IDLE_CLIENTS)
  --big-clients N     (default $BIG_CLIENTS) --big-hold S     (default $BIG_HOLD)
EOF
}

die() { echo "run.sh: $*" >&2; exit 1; }

# LIST (comma-separated) without WORD.
drop_word() {
	local out="" w
	for w in ${1//,/ }; do
		[ "$w" = "$2" ] || out+="${out:+,}$w"
	done
	echo "$out"
}

# True when MODE is a TLS mode.
is_tls() { [[ $1 == tls-* ]]; }
say() { echo "== $*" >&2; }

# Read the command line into the variables above.
parse_args() {
	local opt var
	while [ $# -gt 0 ]; do
		opt=$1
		case $opt in
		-h|--help) usage; exit 0 ;;
		--big) BIG=1; SET[BIG]=1; shift; continue ;;
		--no-big) BIG=0; SET[BIG]=1; shift; continue ;;
		--quick) QUICK=1; shift; continue ;;
		--tls-only) MODES=$TLS_MODES; SET[MODES]=1; TLS_ONLY=1
			shift; continue ;;
		--keep) KEEP=1; shift; continue ;;
		--smoke) SMOKE=1; shift; continue ;;
		--no-build) BUILD=0; shift; continue ;;
		--rounds) var=ROUNDS ;;
		--duration) var=DURATION ;;
		--warmup) var=WARMUP ;;
		--modes) var=MODES ;;
		--gateways) var=GATEWAYS ;;
		--bin-dir) var=BIN_DIR ;;
		--out) var=OUT ;;
		--lg-threads) var=LG_THREADS ;;
		--retries) var=RETRIES ;;
		--disturbed) var=DISTURBED ;;
		--rate-clients) var=RATE_CLIENTS ;;
		--rate-sources) var=RATE_SOURCES ;;
		--echo-clients) var=ECHO_CLIENTS ;;
		--echo-bytes) var=ECHO_BYTES ;;
		--shape-clients) var=SHAPE_CLIENTS ;;
		--backend-threads) var=BACKEND_THREADS ;;
		--stream-clients) var=STREAM_CLIENTS ;;
		--idle-clients) var=IDLE_CLIENTS ;;
		--idle-hold) var=IDLE_HOLD ;;
		--tls-hs-clients) var=TLS_HS_CLIENTS ;;
		--tls-stream-clients) var=TLS_STREAM_CLIENTS ;;
		--tls-idle-clients) var=TLS_IDLE_CLIENTS ;;
		--big-clients) var=BIG_CLIENTS ;;
		--big-hold) var=BIG_HOLD ;;
		*) usage >&2; die "unknown option '$opt'" ;;
		esac
		[ $# -ge 2 ] || die "$opt needs a value"
		printf -v "$var" '%s' "$2"
		SET[$var]=1
		shift 2
	done
	if [ "$QUICK" = 1 ]; then
		[ -n "${SET[ROUNDS]:-}" ] || ROUNDS=1
		[ -n "${SET[DURATION]:-}" ] || DURATION=2
		[ -n "${SET[IDLE_CLIENTS]:-}" ] || IDLE_CLIENTS=2000
		[ -n "${SET[IDLE_HOLD]:-}" ] || IDLE_HOLD=2
		[ -n "${SET[TLS_IDLE_CLIENTS]:-}" ] || TLS_IDLE_CLIENTS=1000
		[ -n "${SET[BIG]:-}" ] || BIG=0
	fi
	[ "${TLS_ONLY:-0}" = 0 ] || [ -n "${SET[BIG]:-}" ] || BIG=0
	for var in ROUNDS DURATION WARMUP RETRIES RATE_CLIENTS RATE_SOURCES \
	    ECHO_CLIENTS ECHO_BYTES STREAM_CLIENTS IDLE_CLIENTS IDLE_HOLD \
	    SHAPE_CLIENTS BACKEND_THREADS \
	    BIG_CLIENTS BIG_HOLD TLS_HS_CLIENTS TLS_STREAM_CLIENTS \
	    TLS_IDLE_CLIENTS; do
		[[ ${!var} =~ ^[0-9]+$ ]] || die "--${var,,} must be a whole number"
	done
	[[ $LG_THREADS =~ ^[0-9]*$ ]] || die "--lg-threads must be a number"
	[[ $DISTURBED =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--disturbed must be a number of cores, such as 0.15"
	[ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 20 ] || die "--rounds: 1 to 20"
	[ "$DURATION" -ge 1 ] && [ "$DURATION" -le 600 ] || die "--duration: 1 to 600"
	local m g
	[ "$MODES" != none ] || MODES=""	# only the big test
	for m in ${MODES//,/ }; do
		[[ ,$PLAIN_MODES,$TLS_MODES, == *,$m,* ]] || die "unknown mode '$m'"
	done
	for g in ${GATEWAYS//,/ }; do
		case $g in esockd|handoff|haproxy|nginx|direct|stunnel) ;; *) die "unknown gateway '$g'" ;; esac
	done
	[ "$BACKEND_THREADS" -ge 1 ] && [ "$BACKEND_THREADS" -le 64 ] ||
		die "--backend-threads: 1 to 64"
	# no TLS mode: no stunnel (nor its install); no plain mode: no
	# direct and no handoff
	[[ ,$MODES, == *,tls-* ]] || GATEWAYS=$(drop_word "$GATEWAYS" stunnel)
	local plain=0
	for m in ${MODES//,/ }; do is_tls "$m" || plain=1; done
	if [ $plain = 0 ] && [ -n "$MODES" ]; then
		GATEWAYS=$(drop_word "$GATEWAYS" direct)
		GATEWAYS=$(drop_word "$GATEWAYS" handoff)
	fi
	BIN_DIR=${BIN_DIR:-$REPO/build}
	OUT=${OUT:-$REPO/bench}
}

# ------------------------------------------------------- processes we own

declare -a OWNED=()			# "pid:starttime" of every process we started
TMP=""
SYSCTL_RESTORE=()			# "key=value" to put back on exit

# Field 22 of /proc/PID/stat (start time in ticks), or nothing.
proc_start() {
	local s
	local -a f
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || return 0
	s=${s##*) }
	read -r -a f <<<"$s"
	echo "${f[19]}"
}

# True while PID exists and is not a zombie.
alive() {
	local s
	{ read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
	s=${s##*) }
	[ "${s:0:1}" != Z ]
}

# PID and all its descendants (threads' children included), one a line.
tree_pids() {
	local c t
	local -a kids
	[ -d "/proc/$1" ] || return 0
	echo "$1"
	for t in /proc/"$1"/task/*/children; do
		kids=()
		# (no newline at its end: read "fails" but fills kids)
		{ read -r -a kids <"$t"; } 2>/dev/null || true
		for c in "${kids[@]}"; do
			tree_pids "$c"
		done
	done
}

# Start "$@" in the background with output to LOG; BG_PID is its pid.
start_bg() {
	local log=$1; shift
	"$@" >"$log" 2>&1 &
	BG_PID=$!
	OWNED+=("$BG_PID:$(proc_start "$BG_PID")")
}

# The same with stdout to OUT and stderr to ERR.
start_bg2() {
	local out=$1 err=$2; shift 2
	"$@" >"$out" 2>"$err" &
	BG_PID=$!
	OWNED+=("$BG_PID:$(proc_start "$BG_PID")")
}

# Stop PID and its descendants: SIGTERM (or SIG) to PID, up to GRACE
# seconds, then SIGKILL to whatever of the tree is left.  A pid is only
# signalled while its start time is the one we saw, so a recycled pid is
# never hit.
stop_tree() {
	local pid=$1 grace=${2:-5} sig=${3:-TERM} i p st
	local -a tree=()
	for p in $(tree_pids "$pid"); do
		tree+=("$p:$(proc_start "$p")")
	done
	[ ${#tree[@]} -gt 0 ] || { wait "$pid" 2>/dev/null || true; return 0; }
	kill "-$sig" "$pid" 2>/dev/null || true
	for ((i = 0; i < grace * 10; i++)); do
		alive "$pid" || break
		sleep 0.1
	done
	for st in "${tree[@]}"; do
		p=${st%%:*}
		[ "$(proc_start "$p")" = "${st#*:}" ] && alive "$p" &&
			kill -KILL "$p" 2>/dev/null || true
	done
	wait "$pid" 2>/dev/null || true
}

# The EXIT trap: stop what we started, put sysctls back, drop the tmp dir.
cleanup() {
	local rc=$? st p kv
	trap - EXIT INT TERM
	for st in "${OWNED[@]}"; do
		p=${st%%:*}
		[ "$(proc_start "$p")" = "${st#*:}" ] && alive "$p" &&
			stop_tree "$p" 2
	done
	for kv in "${SYSCTL_RESTORE[@]}"; do
		$SUDO sysctl -q -w "$kv" >/dev/null 2>&1 ||
			echo "run.sh: could not restore $kv" >&2
	done
	if [ -n "$TMP" ] && [ -d "$TMP" ]; then
		if [ "$KEEP" = 1 ] || { [ $rc -ne 0 ] && [ $rc -ne 130 ] && [ $rc -ne 143 ]; }; then
			echo "run.sh: temporary files kept in $TMP" >&2
		else
			rm -rf -- "$TMP"
		fi
	fi
	exit $rc
}

# Wait for background PID, at most LIMIT seconds (then stop it); the exit
# status is the process's (124 when it had to be stopped).  Polling in
# short sleeps, not one long wait, lets a Ctrl-C reach the trap at once.
wait_bounded() {
	local pid=$1 limit=$2 start=$SECONDS rc=0
	while alive "$pid"; do
		if [ $((SECONDS - start)) -ge "$limit" ]; then
			echo "run.sh: pid $pid still running after ${limit}s; stopping it" >&2
			stop_tree "$pid" 5
			return 124
		fi
		sleep 0.2
	done
	wait "$pid" || rc=$?
	return $rc
}

# --------------------------------------------------- /proc measurements

# utime+stime of PIDS in clock ticks.
cpu_ticks() {
	local total=0 p s
	local -a f
	for p in "$@"; do
		{ read -r s <"/proc/$p/stat"; } 2>/dev/null || continue
		s=${s##*) }
		read -r -a f <<<"$s"
		total=$((total + f[11] + f[12]))
	done
	echo $total
}

# Sum of the Pss: lines of PIDS' smaps_rollup, in kB.
pss_kb() {
	local total=0 p v
	for p in "$@"; do
		v=$(awk '/^Pss:/ { print $2; exit }' "/proc/$p/smaps_rollup" 2>/dev/null) || v=0
		total=$((total + ${v:-0}))
	done
	echo $total
}

# Open descriptors of PIDS.
fd_count() {
	local total=0 p n
	for p in "$@"; do
		n=$(ls "/proc/$p/fd" 2>/dev/null | wc -l) || n=0
		total=$((total + n))
	done
	echo $total
}

# Every process's "pid starttime cputicks ppid comm" to FILE: with the
# processes this script started (OURS), report.py tells from two snapshots
# how much CPU other processes on the machine took during a run.  A
# process that exits between the glob and the read makes cat fail, which
# under pipefail would end the whole run: that process is simply not in
# the snapshot.
cpu_snapshot() {
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk '{
		i = index($0, " ("); j = 0
		for (k = length($0); k > 0; k--) if (substr($0, k, 2) == ") ") { j = k; break }
		if (i == 0 || j == 0) next
		comm = substr($0, i + 2, j - i - 2); gsub(/[ \t]/, "_", comm)
		n = split(substr($0, j + 2), f, " ")
		if (n >= 20) print substr($0, 1, i - 1), f[20], f[12] + f[13], f[2], comm
	}' >"$1"
}

# Sets SYS_TIMES="busy_ticks shell_s children_s steal_ticks": the machine's
# busy time (user+nice+system+irq+softirq of /proc/stat, in USER_HZ ticks), the
# CPU of this shell and of its reaped children (the load generator, the
# helpers) from `times`.  Whatever busy time the gateway, the backend,
# these, kernel threads and the long-lived other processes do not explain
# went to short-lived other processes.  steal is the time the hypervisor
# gave this machine's CPUs to other guests: on a shared host it slows every
# process of a run at once, so it counts as a disturbance too.  Never call
# it in a subshell: there `times` would see the subshell.
sys_times() {
	local cpu u n sy idle iow irq sirq steal rest t
	read -r cpu u n sy idle iow irq sirq steal rest </proc/stat
	times >"$TMP/times"
	t=$(tr '\n' ' ' <"$TMP/times")
	SYS_TIMES="$((u + n + sy + irq + sirq)) $(awk '{
		for (i = 1; i <= 4; i++) { split($i, a, /[ms]/); v[i] = a[1] * 60 + a[2] }
		printf "%.3f %.3f", v[1] + v[2], v[3] + v[4] }' <<<"$t") ${steal:-0}"
}

now() { date +%s.%N; }
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }

# ------------------------------------------------------------ setup steps

# Install gnuplot and the peers this run uses, when missing.
install_deps() {
	local p
	local -a missing=() want=(gnuplot-nox)
	[[ ,$GATEWAYS, != *,haproxy,* ]] || want+=(haproxy)
	[[ ,$GATEWAYS, != *,nginx,* ]] || want+=(nginx libnginx-mod-stream)
	# a bench tool only: esockd itself never needs stunnel
	[[ ,$GATEWAYS, != *,stunnel,* ]] || want+=(stunnel4)
	for p in "${want[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	say "installing ${missing[*]}"
	$SUDO apt-get update -qq || die "apt-get update failed"
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
	    --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
}

# Build esockd (and the bench tools, unless --bin-dir names them).
build() {
	if [ "$BUILD" = 0 ]; then
		return 0
	elif [ -n "${SET[BIN_DIR]:-}" ]; then
		make -C "$REPO" all >&2 || die "make all failed"
	else
		make -C "$REPO" all bench-tools >&2 ||
			die "make all bench-tools failed"
	fi
}

# Locate the binaries and the stream module; fail early if one is missing.
find_tools() {
	ESOCKD_BIN=$REPO/build/esockd
	BENCH_BIN=$BIN_DIR/esockd-bench
	ECHO_BIN=$BIN_DIR/esockd-bench-echo
	TLS_BIN=$BIN_DIR/esockd-bench-tls
	STUNNEL_BIN=$(command -v stunnel4 || command -v stunnel || echo /usr/bin/stunnel4)
	HAPROXY_BIN=$(command -v haproxy || echo /usr/sbin/haproxy)
	NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
	NGX_STREAM=$(dpkg -L libnginx-mod-stream 2>/dev/null |
	    grep -m1 '/ngx_stream_module\.so$' || true)
	NGX_STREAM=${NGX_STREAM:-/usr/lib/nginx/modules/ngx_stream_module.so}
	local b
	for b in "$ESOCKD_BIN" "$ECHO_BIN"; do
		[ -x "$b" ] || die "$b is missing"
	done
	[ "$SMOKE" = 1 ] || [ -x "$BENCH_BIN" ] || die "$BENCH_BIN is missing"
	[[ ,$MODES, != *,tls-* ]] || [ -x "$TLS_BIN" ] || die "$TLS_BIN is missing (make bench-tools)"
	[[ ,$GATEWAYS, != *,stunnel,* ]] || [ -x "$STUNNEL_BIN" ] || die "stunnel is missing"
	command -v openssl >/dev/null || [[ ,$MODES, != *,tls-* ]] || die "openssl is missing"
	[[ ,$GATEWAYS, != *,haproxy,* ]] || [ -x "$HAPROXY_BIN" ] || die "haproxy is missing"
	[[ ,$GATEWAYS, != *,nginx,* ]] || [ -x "$NGINX_BIN" ] || die "nginx is missing"
	[[ ,$GATEWAYS, != *,nginx,* ]] || [ -f "$NGX_STREAM" ] || die "$NGX_STREAM is missing"
	[ -x "$PY" ] || die "$PY is missing"
}

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
	$PY -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# True once something listens on 127.0.0.1:PORT.
listening() {
	ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# Send a short message through 127.0.0.1:PORT and expect it back.
echo_check() {
	timeout 10 bash -c '
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf %s "$2" >&3
		IFS= read -r -t 5 -N "${#2}" reply <&3 || exit 1
		[ "$reply" = "$2" ]' _ "$1" "esockd-bench-check-$$-$RANDOM"
}

# Start an echo backend on Unix socket SOCK with THREADS threads; LOG.
# With a 4th argument -H, a hand-off handler instead.  Sets BG_PID.
start_backend() {
	local sock=$1 threads=$2 log=$3 flag=${4:--l} i
	rm -f -- "$sock"
	start_bg "$log" "$ECHO_BIN" "$flag" "unix:$sock" -T "$threads"
	for ((i = 0; i < 100; i++)); do
		[ -S "$sock" ] && return 0
		alive "$BG_PID" || break
		sleep 0.1
	done
	cat "$log" >&2
	die "the echo backend on $sock did not start"
}

# Try a sysctl: raise KEY to at least WANT (for ip_local_port_range: widen
# to WANT).  The value written is never below the current one, so even a
# key already high enough shows whether the sandbox lets us write it.
# Appends "key<TAB>before<TAB>after<TAB>outcome" to $TMP/sysctl.tsv.
try_sysctl() {
	local key=$1 want=$2 cur new out outcome lo hi wlo whi
	cur=$(sysctl -n "$key" 2>/dev/null | tr -s ' \t' ' ') || cur=""
	if [ -z "$cur" ]; then
		printf '%s\t-\t-\tcannot read\n' "$key" >>"$TMP/sysctl.tsv"
		return 0
	fi
	if [ "$key" = net.ipv4.ip_local_port_range ]; then
		read -r lo hi <<<"$cur"
		read -r wlo whi <<<"$want"
		[ "$lo" -lt "$wlo" ] && wlo=$lo
		[ "$hi" -gt "$whi" ] && whi=$hi
		want="$wlo $whi"
	elif [ "$cur" -gt "$want" ]; then
		want=$cur
	fi
	if out=$($SUDO sysctl -w "$key=$want" 2>&1); then
		new=$(sysctl -n "$key" 2>/dev/null | tr -s ' \t' ' ')
		if [ "$new" = "$cur" ] && [ "$want" = "$cur" ]; then
			outcome="ok (already $cur; rewritten)"
		elif [ "$new" = "$want" ]; then
			outcome="ok (raised)"
			SYSCTL_RESTORE+=("$key=$cur")
		else
			outcome="accepted but reads $new"
			SYSCTL_RESTORE+=("$key=$cur")
		fi
	else
		new=$cur
		outcome="refused: $(echo "$out" | tr '\t\n' '  ')"
	fi
	printf '%s\t%s\t%s\t%s\n' "$key" "$cur" "$new" "$outcome" >>"$TMP/sysctl.tsv"
}

# -------------------------------------------------------------- gateways
#
# start_<gw> PORT writes the configuration and starts the gateway; it sets
# GW_PID (the process we started) and GW_CMD (its command line).

start_esockd() {
	local port=$1 cfg=$TMP/esockd.conf tls=""
	[ -z "$GW_TLS" ] || {
		cfg=$TMP/esockd-tls.conf
		tls="tls_certificate = \"$TMP/$GW_TLS.crt\"; tls_key = \"$TMP/$GW_TLS.key\";"
	}
	cat >"$cfg" <<EOF
# esockd: 2 workers, logging off (warnings only), generous limits
workers = 2; max_open_files = 20000; log_level = "warn"; shutdown_timeout = 1;
control_socket = "";	# none: the bench needs no operator socket
listeners = ( { name = "bench"; bind = "127.0.0.1:$port"; backlog = 4096;
                max_connections = 100000; idle_timeout = 0; defer_accept = 1;
                $tls
                backend = { socket = "$BACKEND_SOCK"; connect_timeout = 5000; }; } );
EOF
	GW_CMD="$ESOCKD_BIN -c $cfg"
	start_bg "$GW_LOG" "$ESOCKD_BIN" -c "$cfg"
	GW_PID=$BG_PID
}

# esockd in hand-off mode: the same listener, handing each client to the
# hand-off echo backend (esockd-bench-echo -H) instead of relaying it.
start_handoff() {
	local port=$1 cfg=$TMP/esockd-handoff.conf
	cat >"$cfg" <<EOF
# esockd, hand-off mode: 2 workers, logging off (warnings only), generous limits
workers = 2; max_open_files = 20000; log_level = "warn"; shutdown_timeout = 1;
control_socket = "";	# none: the bench needs no operator socket
listeners = ( { name = "bench"; bind = "127.0.0.1:$port"; backlog = 4096;
                max_connections = 100000; idle_timeout = 0; defer_accept = 1;
                backend = { socket = "$HANDOFF_SOCK"; mode = "handoff";
                            connect_timeout = 5000; }; } );
EOF
	GW_CMD="$ESOCKD_BIN -c $cfg"
	start_bg "$GW_LOG" "$ESOCKD_BIN" -c "$cfg"
	GW_PID=$BG_PID
}

# HAProxy refuses to start when maxconn does not fit the descriptor limit
# (it needs 2 per connection plus ~17): with the 20,000 cap, 9,900 is
# about as generous as it can be, and above the 8,000 of the idle test.
start_haproxy() {
	local port=$1 cfg=$TMP/haproxy.cfg tls=""
	# crt: one PEM with the certificate and its key
	[ -z "$GW_TLS" ] || { cfg=$TMP/haproxy-tls.cfg; tls=" ssl crt $TMP/$GW_TLS.pem"; }
	cat >"$cfg" <<EOF
# HAProxy 2.6: 2 threads, no log lines, generous limits
global
    nbthread 2
    maxconn 9900

defaults
    mode tcp
    maxconn 9900
    timeout connect 5s
    timeout client 600s
    timeout server 600s

frontend bench
    bind 127.0.0.1:$port backlog 4096 defer-accept$tls
    default_backend echo

backend echo
    server s1 $BACKEND_SOCK
EOF
	GW_CMD="$HAPROXY_BIN -f $cfg -db"
	start_bg "$GW_LOG" "$HAPROXY_BIN" -f "$cfg" -db
	GW_PID=$BG_PID
}

# nginx: `user root` because the temporary directory is private (0700)
# and the workers must reach the backend socket in it.  multi_accept is
# left at its default (off), as operators run it; see RESULTS.md.
start_nginx() {
	local port=$1 cfg=$TMP/nginx.conf tls="" ssl=""
	[ -z "$GW_TLS" ] || {
		cfg=$TMP/nginx-tls.conf ssl=" ssl"
		# ssl_protocols: nginx before 1.23.4 (Debian 12 has 1.22)
		# leaves TLS 1.3 off by default, and a TLS 1.2 handshake or
		# resumption (no key exchange) is cheaper work than the 1.3
		# that the other gateways negotiate: the rows would not compare
		tls="ssl_certificate $TMP/$GW_TLS.crt; ssl_certificate_key $TMP/$GW_TLS.key; ssl_protocols TLSv1.2 TLSv1.3;"
	}
	cat >"$cfg" <<EOF
# nginx 1.22 stream: 2 workers, errors only at crit, generous limits
load_module $NGX_STREAM;
user root;
worker_processes 2;
worker_rlimit_nofile 20000;
error_log $TMP/nginx-error.log crit;
pid $TMP/nginx.pid;

events {
    worker_connections 20000;
}

stream {
    server {
        listen 127.0.0.1:$port backlog=4096$ssl;
        $tls
        proxy_pass unix:$BACKEND_SOCK;
        proxy_timeout 600s;
    }
}
EOF
	GW_CMD="$NGINX_BIN -c $cfg -p $TMP -e $TMP/nginx-error.log -g 'daemon off;'"
	start_bg "$GW_LOG" "$NGINX_BIN" -c "$cfg" -p "$TMP" \
	    -e "$TMP/nginx-error.log" -g 'daemon off;'
	GW_PID=$BG_PID
}

# stunnel 5: one process, a thread per connection (it has no worker or
# thread count), so it is pinned to 2 CPUs with taskset: the same 2 cores
# as the others' 2 workers or threads (on a 2-core machine that pins
# nothing).  Foreground, no pid file, no syslog, log level 0 (emerg).
start_stunnel() {
	local port=$1 cfg=$TMP/stunnel.conf
	local -a pin=()
	command -v taskset >/dev/null && pin=(taskset -c 0,1)
	[ "$(nproc)" -ge 2 ] || pin=()
	cat >"$cfg" <<EOF
; stunnel: TLS on 127.0.0.1:$port to the Unix-socket backend, logging off
foreground = yes
pid =
syslog = no
debug = 0
socket = l:TCP_NODELAY=1

[bench]
accept = 127.0.0.1:$port
connect = $BACKEND_SOCK
cert = $TMP/$GW_TLS.crt
key = $TMP/$GW_TLS.key
EOF
	GW_CMD="${pin[*]}${pin:+ }$STUNNEL_BIN $cfg"
	start_bg "$GW_LOG" "${pin[@]}" "$STUNNEL_BIN" "$cfg"
	GW_PID=$BG_PID
}

# No gateway: a second echo server on TCP, hit directly.
start_direct() {
	local port=$1
	GW_CMD="$ECHO_BIN -l tcp:127.0.0.1:$port -T 2"
	start_bg "$GW_LOG" "$ECHO_BIN" -l "tcp:127.0.0.1:$port" -T 2
	GW_PID=$BG_PID
}

# Start gateway GW on a free port, wait until it listens and relays one
# echo.  Sets GW_PID, GW_PORT, GW_CMD.  A port taken in between (another
# run) gets a retry with a new one.
start_gateway() {
	local gw=$1 try i
	GW_LOG=$TMP/logs/$RUN_TAG.log
	GW_SUFFIX=${GW_TLS:+-tls}
	for try in 1 2 3; do
		GW_PORT=$(free_port)
		# whose CPU is "the backend's" in this run
		GW_BACKEND_PID=$BACKEND_PID
		[ "$gw" != handoff ] || GW_BACKEND_PID=$HANDOFF_PID
		"start_$gw" "$GW_PORT"
		for ((i = 0; i < 100; i++)); do
			listening "$GW_PORT" && break
			alive "$GW_PID" || break
			sleep 0.1
		done
		if alive "$GW_PID" && listening "$GW_PORT"; then
			for ((i = 0; i < 20; i++)); do
				gw_check "$GW_PORT" && {
					[ -f "$TMP/cmd.$gw$GW_SUFFIX" ] ||
						echo "$GW_CMD" >"$TMP/cmd.$gw$GW_SUFFIX"
					return 0
				}
				sleep 0.25
			done
			echo "run.sh: $gw listens on $GW_PORT but does not relay" >&2
		fi
		stop_tree "$GW_PID" 5
		echo "run.sh: $gw did not start on port $GW_PORT (try $try); its log:" >&2
		tail -n 20 "$GW_LOG" >&2 || true
	done
	die "$gw could not be started"
}

# One echo through the gateway: TLS when GW_TLS is set.
gw_check() {
	if [ -n "$GW_TLS" ]; then
		timeout 10 "$TLS_BIN" check -t "127.0.0.1:$1" 2>>"$TMP/runs/$RUN_TAG.check"
	else
		echo_check "$1"
	fi
}

stop_gateway() {
	stop_tree "$GW_PID" 10
}

# ----------------------------------------------------------------- modes

# The load generator's arguments for MODE (without -t).
mode_args() {
	case $1 in
	rate) echo "-c $RATE_CLIENTS -d $DURATION -w $WARMUP -S $RATE_SOURCES" ;;
	echo) echo "-c $ECHO_CLIENTS -m $ECHO_BYTES -d $DURATION -w $WARMUP" ;;
	echo64|echo1k|echo16k)
		echo "-c $SHAPE_CLIENTS -m $(shape_bytes "$1") -d $DURATION -w $WARMUP" ;;
	latency) echo "-c 1 -m 64 -T 1 -d $DURATION -w $WARMUP" ;;
	stream) echo "-c $STREAM_CLIENTS -d $DURATION -w $WARMUP" ;;
	stream4k|stream16k|stream1m)
		echo "-c $STREAM_CLIENTS -m $(shape_bytes "$1") -d $DURATION -w $WARMUP" ;;
	idle) echo "-c $IDLE_CLIENTS -d $IDLE_HOLD" ;;
	tls-rsa|tls-ecdsa) echo "-c $TLS_HS_CLIENTS -d $DURATION -w $WARMUP" ;;
	tls-resume) echo "-r -c $TLS_HS_CLIENTS -d $DURATION -w $WARMUP" ;;
	tls-stream) echo "-c $TLS_STREAM_CLIENTS -d $DURATION -w $WARMUP" ;;
	tls-idle) echo "-c $TLS_IDLE_CLIENTS -d $IDLE_HOLD" ;;
	esac
	[ -z "$LG_THREADS" ] || [ "$1" = latency ] || echo "-T $LG_THREADS"
}

# The message or chunk size of a shape: the number its name ends in.
shape_bytes() {
	case $1 in
	*64) echo 64 ;;
	*1k) echo 1024 ;;
	*4k) echo 4096 ;;
	*16k) echo 16384 ;;
	*1m) echo 1048576 ;;
	esac
}

# Sets LG_BIN and LG_MODE: the load generator and its mode for MODE.
lg_for() {
	case $1 in
	tls-rsa|tls-ecdsa|tls-resume) LG_BIN=$TLS_BIN LG_MODE=hs ;;
	tls-stream) LG_BIN=$TLS_BIN LG_MODE=stream ;;
	tls-idle) LG_BIN=$TLS_BIN LG_MODE=idle ;;
	echo*|latency) LG_BIN=$BENCH_BIN LG_MODE=echo ;;
	stream*) LG_BIN=$BENCH_BIN LG_MODE=stream ;;
	*) LG_BIN=$BENCH_BIN LG_MODE=$1 ;;
	esac
}

# The certificate a TLS mode uses (rsa or ecdsa); nothing for plain ones.
tls_of() {
	case $1 in
	tls-rsa) echo rsa ;;
	tls-*) echo ecdsa ;;
	esac
}

# The gateways that run MODE: direct and handoff have no TLS (esockd -t
# refuses a hand-off backend on a TLS listener), stunnel nothing else.
mode_gateways() {
	if is_tls "$1"; then
		drop_word "$(drop_word "$GATEWAYS" direct)" handoff
	else
		drop_word "$GATEWAYS" stunnel
	fi
}

# The certificates of the TLS modes, made once per run in TMP:
# rsa.{crt,key,pem} (RSA-2048) and ecdsa.{crt,key,pem} (P-256), self-
# signed; the .pem holds both for HAProxy's crt.
make_certs() {
	local k
	for k in rsa ecdsa; do
		if [ $k = rsa ]; then
			set -- -newkey rsa:2048
		else
			set -- -newkey ec -pkeyopt ec_paramgen_curve:P-256
		fi
		openssl req -x509 "$@" -nodes -sha256 -days 2 \
		    -subj "/CN=esockd-bench-$k" -keyout "$TMP/$k.key" \
		    -out "$TMP/$k.crt" 2>"$TMP/logs/openssl-$k.err" ||
			die "openssl could not make the $k certificate"
		rm -f "$TMP/logs/openssl-$k.err"
		cat "$TMP/$k.crt" "$TMP/$k.key" >"$TMP/$k.pem"
	done
}

# Append one record (key=value words) for a finished run to results.txt.
record() {
	echo "$*" >>"$TMP/results.txt"
}

# The RESULT line of a load generator's stdout without its first word.
result_of() {
	local r
	r=$(grep -m1 '^RESULT ' "$1" 2>/dev/null) || { echo "result=missing"; return 0; }
	echo "${r#RESULT }"
}

# rate, echo, stream: one timed run of the load generator against
# 127.0.0.1:GW_PORT, with the gateway's and the backend's CPU sampled
# right before and right after it.
run_throughput() {
	local gw=$1 mode=$2 round=$3 base=$TMP/runs/$RUN_TAG rc=0
	local -a pids args
	read -r -a args <<<"$(mode_args "$mode" | tr '\n' ' ')"
	mapfile -t pids < <(tree_pids "$GW_PID")
	local c0 b0 t0 c1 b1 t1 p1 q split="" fds="" mid
	local -a per0
	lg_for "$mode"
	echo "$LG_BIN $LG_MODE -t 127.0.0.1:$GW_PORT ${args[*]}" >"$base.cmd"
	for q in "${pids[@]}"; do per0+=("$(cpu_ticks "$q")"); done
	tree_pids $$ >"$base.ours"
	cpu_snapshot "$base.snap0"
	local s0 s1
	sys_times; s0=$SYS_TIMES
	c0=$(cpu_ticks "${pids[@]}"); b0=$(cpu_ticks "$GW_BACKEND_PID"); t0=$(now)
	start_bg2 "$base.out" "$base.err" "$LG_BIN" "$LG_MODE" \
	    -t "127.0.0.1:$GW_PORT" "${args[@]}"
	local lg=$BG_PID
	# halfway through the measured window: descriptors per gateway
	# process, which shows how the connections are spread over workers
	mid=$(awk -v w="$WARMUP" -v d="$DURATION" 'BEGIN { print int((w + d / 2) * 10) }')
	for ((q = 0; q < mid && q < 6000; q++)); do
		alive "$lg" || break
		sleep 0.1
	done
	for q in "${pids[@]}"; do fds+="${fds:+/}$(fd_count "$q")"; done
	wait_bounded "$lg" $((WARMUP + DURATION + 120)) || rc=$?
	t1=$(now); c1=$(cpu_ticks "${pids[@]}"); b1=$(cpu_ticks "$GW_BACKEND_PID")
	sys_times; s1=$SYS_TIMES
	cpu_snapshot "$base.snap1"
	tree_pids $$ >>"$base.ours"
	for ((q = 0; q < ${#pids[@]}; q++)); do
		split+="${split:+/}$(($(cpu_ticks "${pids[q]}") - per0[q]))"
	done
	mapfile -t p1 < <(tree_pids "$GW_PID")
	record "run gw=$gw mode=$mode round=$round tag=$RUN_TAG lg_rc=$rc" \
	    "wall_s=$(fsub "$t1" "$t0") gw_cpu_ticks=$((c1 - c0))" \
	    "backend_cpu_ticks=$((b1 - b0)) clk_tck=$CLK_TCK" \
	    "gw_procs=${#pids[@]} gw_procs_after=${#p1[@]}" \
	    "gw_cpu_split=$split gw_fds_mid=$fds" \
	    "sys_busy_ticks=$(($(cut -d' ' -f1 <<<"$s1") - $(cut -d' ' -f1 <<<"$s0")))" \
	    "shell_cpu_s=$(fsub "$(cut -d' ' -f2 <<<"$s1")" "$(cut -d' ' -f2 <<<"$s0")")" \
	    "children_cpu_s=$(fsub "$(cut -d' ' -f3 <<<"$s1")" "$(cut -d' ' -f3 <<<"$s0")")" \
	    "sys_steal_ticks=$(($(cut -d' ' -f4 <<<"$s1") - $(cut -d' ' -f4 <<<"$s0")))" \
	    "$(result_of "$base.out")"
}

# idle: the gateway's PSS after it relayed one echo (baseline), then while
# the load generator holds its connections (the highest of a few samples
# over the hold, since clients count as established before the gateway
# has accepted them all).
run_idle() {
	local gw=$1 round=$2 clients=$3 hold=$4 base=$TMP/runs/$RUN_TAG
	shift 4
	local -a pids extra=("$@") args
	local mode=${IDLE_MODE:-idle}
	read -r -a args <<<"$(mode_args "$mode" | tr '\n' ' ')"
	lg_for "$mode"
	[ ${#extra[@]} -eq 0 ] || args=("${extra[@]}")
	mapfile -t pids < <(tree_pids "$GW_PID")
	local pss0 pss1=0 fds1=0 p f i rc=0 held=0 t0 limit
	sleep 0.5
	pss0=$(pss_kb "${pids[@]}")
	echo "$LG_BIN idle -t 127.0.0.1:$GW_PORT ${args[*]}" >"$base.cmd"
	t0=$SECONDS
	limit=$((60 + clients / 500 + hold))
	start_bg2 "$base.out" "$base.err" "$LG_BIN" idle \
	    -t "127.0.0.1:$GW_PORT" "${args[@]}"
	local lg=$BG_PID
	while alive "$lg" && [ $((SECONDS - t0)) -lt "$limit" ]; do
		grep -q '^HOLDING' "$base.out" 2>/dev/null && { held=1; break; }
		sleep 0.1
	done
	if [ $held = 1 ]; then
		# sample over the hold, leaving its last half second alone; the
		# hook (big test) runs once, a third of the way in
		local th hooked=0 el
		th=$(now)
		for ((i = 0; i < hold * 8 + 2; i++)); do
			mapfile -t pids < <(tree_pids "$GW_PID")
			p=$(pss_kb "${pids[@]}"); [ "$p" -gt "$pss1" ] && pss1=$p
			f=$(fd_count "${pids[@]}"); [ "$f" -gt "$fds1" ] && fds1=$f
			el=$(fsub "$(now)" "$th")
			if [ $hooked = 0 ] && [ -n "${ON_HOLD:-}" ] &&
			    awk -v e="$el" -v h="$hold" 'BEGIN { exit !(e >= h / 3) }'; then
				"$ON_HOLD"
				hooked=1
			fi
			alive "$lg" || break
			awk -v e="$el" -v h="$hold" 'BEGIN { exit !(e + 0.75 < h) }' ||
				break
			sleep 0.25
		done
		if [ $hooked = 0 ] && [ -n "${ON_HOLD:-}" ] && alive "$lg"; then
			"$ON_HOLD"
		fi
	fi
	wait_bounded "$lg" $((limit + 30)) || rc=$?
	record "run gw=$gw mode=$mode round=$round tag=$RUN_TAG lg_rc=$rc holding=$held" \
	    "pss_base_kb=$pss0 pss_held_kb=$pss1 gw_fds_held=$fds1" \
	    "gw_procs=${#pids[@]} $(result_of "$base.out")"
}

# One measured run: a fresh gateway, its check echo, the mode, stop.  A
# throughput run during which other processes on the machine took more
# than DISTURBED cores (other guests' steal time included) is set aside
# ("disturbed" in results.txt) and run again, at most RETRIES times.  A
# last attempt that is disturbed too is set aside as well: that round then
# has no figure for the gateway, and the median is taken over the others,
# because one run slowed by another guest would skew a 3-run median.
measure() {
	local gw=$1 mode=$2 round=$3 attempt other
	for ((attempt = 1; attempt <= RETRIES + 1; attempt++)); do
		RUN_TAG=$gw-$mode-r$round
		[ "$attempt" -eq 1 ] || RUN_TAG+=-a$attempt
		if [ "$attempt" -eq 1 ]; then
			say "round $round/$ROUNDS: $mode via $gw"
		else
			say "round $round/$ROUNDS: $mode via $gw (attempt $attempt)"
		fi
		GW_TLS=$(tls_of "$mode")
		start_gateway "$gw"
		case $mode in
		idle) run_idle "$gw" "$round" "$IDLE_CLIENTS" "$IDLE_HOLD" ;;
		tls-idle) IDLE_MODE=tls-idle run_idle "$gw" "$round" \
		    "$TLS_IDLE_CLIENTS" "$IDLE_HOLD" ;;
		*) run_throughput "$gw" "$mode" "$round" ;;
		esac
		stop_gateway
		if tail -n 1 "$TMP/results.txt" | grep -q 'result=missing'; then
			echo "run.sh: no RESULT line from $RUN_TAG; its stderr:" >&2
			tail -n 5 "$TMP/runs/$RUN_TAG.err" >&2 || true
		fi
		sleep 0.5
		[ "$mode" != idle ] && [ "$mode" != tls-idle ] || break
		other=$($PY "$REPO/bench/report.py" --tmp "$TMP" --other-cpu "$RUN_TAG")
		awk -v o="${other%% *}" -v d="$DISTURBED" \
		    'BEGIN { exit !(o != "unknown" && o + 0 > d + 0) }' || break
		sed -i '$ s/^run /disturbed /' "$TMP/results.txt"
		if [ "$attempt" -le "$RETRIES" ]; then
			say "other processes took ${other%% *} cores (${other#* }); again"
		else
			say "other processes took ${other%% *} cores (${other#* }); no attempt left: round $round has no $mode figure for $gw"
		fi
	done
}

# ------------------------------------------------------- the 100k test

# esockd alone, 12 workers, 6 backends, BIG_CLIENTS idle connections.
big_test() {
	local i kv socks="" big_pids=() gwlist
	RUN_TAG=big GW_TLS=""
	say "big: esockd holding $BIG_CLIENTS connections"
	for kv in "fs.file-max 2097152" "fs.nr_open 1048576" \
	    "net.ipv4.ip_local_port_range 1024 65535" \
	    "net.core.somaxconn 65535" "net.ipv4.tcp_max_syn_backlog 65535"; do
		try_sysctl "${kv%% *}" "${kv#* }"
	done
	for ((i = 1; i <= BIG_BACKENDS; i++)); do
		start_backend "$TMP/big-$i.sock" 1 "$TMP/logs/big-backend-$i.log"
		big_pids+=("$BG_PID")
		socks+="${socks:+, }\"$TMP/big-$i.sock\""
	done
	local port cfg=$TMP/esockd-big.conf
	port=$(free_port)
	cat >"$cfg" <<EOF
# esockd for the 100k test: $BIG_WORKERS workers of at most 20,000 descriptors
# each; log_level info for the SIGUSR1 counters (nothing per connection)
workers = $BIG_WORKERS; max_open_files = 20000; log_level = "info"; shutdown_timeout = 1;
control_socket = "";
listeners = ( { name = "bench"; bind = "127.0.0.1:$port"; backlog = 65535;
                max_connections = $((BIG_CLIENTS + 10000)); idle_timeout = 0;
                backend = { socket = ( $socks ); connect_timeout = 5000; }; } );
EOF
	echo "$ESOCKD_BIN -c $cfg" >"$TMP/cmd.big"
	start_bg "$TMP/logs/esockd-big.log" "$ESOCKD_BIN" -c "$cfg"
	GW_PID=$BG_PID GW_PORT=$port
	for ((i = 0; i < 100; i++)); do
		listening "$port" && break
		alive "$GW_PID" || break
		sleep 0.1
	done
	echo_check "$port" || die "esockd (big) does not relay; see $TMP/logs/esockd-big.log"
	ON_HOLD=big_on_hold
	run_idle esockd-big 1 "$BIG_CLIENTS" "$BIG_HOLD" \
	    -c "$BIG_CLIENTS" -S "$BIG_SOURCES" -P "$BIG_PROCS" -d "$BIG_HOLD"
	ON_HOLD=""
	# per-worker descriptors and what the master counted
	gwlist=$(tree_pids "$GW_PID" | tail -n +2 | tr '\n' ' ')
	grep 'stats listener=' "$TMP/logs/esockd-big.log" | tail -n 1 \
	    >"$TMP/big-stats.txt" || true
	grep -v 'stats listener=\|worker [0-9]* started' \
	    "$TMP/logs/esockd-big.log" | tail -n 20 >"$TMP/big-log-tail.txt" || true
	tail -n 20 "$TMP/runs/big.err" >"$TMP/big-lg-tail.txt" 2>/dev/null || true
	stop_tree "$GW_PID" 10
	for i in "${big_pids[@]}"; do stop_tree "$i" 5; done
	echo "big workers=$BIG_WORKERS backends=$BIG_BACKENDS procs=$BIG_PROCS" \
	    "sources=$BIG_SOURCES clients=$BIG_CLIENTS worker_pids=${gwlist// /,}" \
	    >>"$TMP/results.txt"
}

# While the big test holds: descriptors per worker, and the master's
# counters (SIGUSR1 makes it log one stats line per listener).
big_on_hold() {
	local p line=""
	for p in $(tree_pids "$GW_PID" | tail -n +2); do
		line+="$(fd_count "$p") "
	done
	echo "$line" >"$TMP/big-fds.txt"
	kill -USR1 "$GW_PID" 2>/dev/null || true
	sleep 0.3
}

# ------------------------------------------------------------------ main

# Facts about the machine and this run, for the report (key<TAB>value).
write_meta() {
	local dirty=""
	git -C "$REPO" diff --quiet HEAD 2>/dev/null || dirty="-dirty"
	{
		printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
		printf 'commit\t%s%s\n' "$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$dirty"
		printf 'nproc\t%s\n' "$(nproc)"
		printf 'kernel\t%s\n' "$(uname -sr)"
		printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
		printf 'memory\t%s\n' "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
		printf 'nofile\t%s\n' "$(ulimit -Hn)"
		printf 'clk_tck\t%s\n' "$CLK_TCK"
		printf 'haproxy\t%s\n' "$($HAPROXY_BIN -v 2>/dev/null | head -n 1 || echo none)"
		printf 'nginx\t%s\n' "$($NGINX_BIN -v 2>&1 | head -n 1 || echo none)"
		printf 'stunnel\t%s\n' "$($STUNNEL_BIN -version 2>&1 | grep -m1 '^stunnel' || echo none)"
		printf 'openssl\t%s\n' "$(openssl version 2>/dev/null || echo none)"
		printf 'flags\t%s\n' "$ARGS"
		printf 'rounds\t%s\nduration\t%s\nwarmup\t%s\n' "$ROUNDS" "$DURATION" "$WARMUP"
		printf 'modes\t%s\ngateways\t%s\nbig\t%s\n' "$MODES" "$GATEWAYS" "$BIG"
		printf 'sizes\trate -c %s -S %s; echo64 -c %s -m 64; echo1k -c %s -m 1024; echo16k -c %s -m 16384; echo -c %s -m %s; stream4k -c %s -m 4096; stream16k -c %s -m 16384; stream -c %s; stream1m -c %s -m 1048576; latency -c 1 -m 64; idle -c %s -d %s; big -c %s -S %s -P %s -d %s; tls-rsa -c %s; tls-ecdsa -c %s; tls-resume -r -c %s; tls-stream -c %s; tls-idle -c %s -d %s\n' \
		    "$RATE_CLIENTS" "$RATE_SOURCES" "$SHAPE_CLIENTS" \
		    "$SHAPE_CLIENTS" "$SHAPE_CLIENTS" "$ECHO_CLIENTS" "$ECHO_BYTES" \
		    "$STREAM_CLIENTS" "$STREAM_CLIENTS" "$STREAM_CLIENTS" \
		    "$STREAM_CLIENTS" "$IDLE_CLIENTS" "$IDLE_HOLD" "$BIG_CLIENTS" \
		    "$BIG_SOURCES" "$BIG_PROCS" "$BIG_HOLD" "$TLS_HS_CLIENTS" \
		    "$TLS_HS_CLIENTS" "$TLS_HS_CLIENTS" "$TLS_STREAM_CLIENTS" \
		    "$TLS_IDLE_CLIENTS" "$IDLE_HOLD"
		printf 'backend\t%s\n' "$BACKEND_CMD"
		printf 'handoff_backend\t%s\n' "$HANDOFF_CMD"
	} >"$TMP/meta.tsv"
}

main() {
	ARGS="bench/run.sh${*:+ $*}"
	parse_args "$@"
	install_deps
	build
	find_tools
	CLK_TCK=$(getconf CLK_TCK)

	trap cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/esockd-bench.XXXXXX")
	[ ${#TMP} -le 80 ] || die "temporary directory path too long for Unix sockets: $TMP"
	mkdir -p "$TMP/logs" "$TMP/runs"
	: >"$TMP/results.txt"; : >"$TMP/sysctl.tsv"
	say "temporary directory $TMP"

	BACKEND_SOCK=$TMP/backend.sock
	start_backend "$BACKEND_SOCK" "$BACKEND_THREADS" "$TMP/logs/backend.log"
	BACKEND_PID=$BG_PID
	BACKEND_CMD="$ECHO_BIN -l unix:$BACKEND_SOCK -T $BACKEND_THREADS"
	HANDOFF_SOCK=$TMP/handoff.sock HANDOFF_PID="" HANDOFF_CMD=""
	if [[ ,$GATEWAYS, == *,handoff,* ]]; then
		start_backend "$HANDOFF_SOCK" "$BACKEND_THREADS" \
		    "$TMP/logs/hobackend.log" -H
		HANDOFF_PID=$BG_PID
		HANDOFF_CMD="$ECHO_BIN -H unix:$HANDOFF_SOCK -T $BACKEND_THREADS"
	fi

	local gw mode round
	GW_TLS=""
	[[ ,$MODES, != *,tls-* ]] || make_certs
	if [ "$SMOKE" = 1 ]; then
		for gw in $(drop_word "$GATEWAYS" stunnel | tr , ' '); do
			RUN_TAG=$gw-smoke GW_TLS=""
			start_gateway "$gw"
			say "$gw relays on 127.0.0.1:$GW_PORT: $GW_CMD"
			stop_gateway
		done
		if [[ ,$MODES, == *,tls-* ]]; then
			for gw in $(drop_word "$(drop_word "$GATEWAYS" direct)" handoff | tr , ' '); do
				RUN_TAG=$gw-tls-smoke GW_TLS=ecdsa
				start_gateway "$gw"
				say "$gw terminates TLS on 127.0.0.1:$GW_PORT: $GW_CMD"
				stop_gateway
			done
		fi
		return 0
	fi
	write_meta
	# one quiet second first: was anything else busy on the machine?
	tree_pids $$ >"$TMP/runs/preflight-check-r0.ours"
	cpu_snapshot "$TMP/runs/preflight-check-r0.snap0"
	sleep 1
	cpu_snapshot "$TMP/runs/preflight-check-r0.snap1"
	local gws=() k n
	for ((round = 1; round <= ROUNDS; round++)); do
		for mode in ${MODES//,/ }; do
			gws=($(mode_gateways "$mode" | tr , ' '))
			n=${#gws[@]}
			for ((k = 0; k < n; k++)); do
				measure "${gws[(k + round - 1) % n]}" "$mode" "$round"
			done
		done
	done
	if [ "$BIG" = 1 ]; then
		big_test
	fi
	stop_tree "$BACKEND_PID" 5
	[ -z "$HANDOFF_PID" ] || stop_tree "$HANDOFF_PID" 5
	mkdir -p "$OUT"
	$PY "$REPO/bench/report.py" --tmp "$TMP" --out "$OUT" \
	    --plot "$REPO/bench/plot.gp" || die "report.py failed"
	# a missed target is no failure, but a load generator that never
	# produced a result is a broken setup
	# (awk, not grep | grep -q: under pipefail the first grep's SIGPIPE,
	# when grep -q stops reading early, would read as "no result")
	if grep -q '^run ' "$TMP/results.txt" &&
	    ! awk '/^run / && !/result=missing/ { ok = 1 } END { exit !ok }' \
	    "$TMP/results.txt"; then
		die "the load generator produced no result at all; see $TMP/runs"
	fi
}

# Sourced (by the harness test, for one function), it only defines.
[ "${BASH_SOURCE[0]}" != "$0" ] || main "$@"
