#!/usr/bin/env bash
# compare.sh: rdaemon side by side with start-stop-daemon, daemon(1) and
# flock(1), in one run, as a markdown table with medians, ratios and targets.
#
# Usage: benches/compare.sh [OUTPUT.md]      (default: target/bench/compare.md)
#
# What it measures (see BENCHMARKS.md for the results and their diagnosis):
#   start     time until the caller returns (hyperfine), and time until
#             COMMAND is actually running (COMMAND = benches/mark.c, which
#             writes CLOCK_REALTIME to a file as its first act), for rdaemon,
#             `start-stop-daemon --start --background --make-pidfile` and
#             `daemon --name`; each tool's daemon is stopped between runs
#   check     `rdaemon --check` vs `start-stop-daemon --status`,
#             `flock -n F true`, `daemon --running` and plain `true`
#   footprint VmRSS and idle wakeups (voluntary context switches over
#             IDLE_SECS) of the idle supervisor vs `daemon --respawn`
#   heartbeat `cargo bench --bench heartbeat` (divan), ns per call
#   scale     PEERS peers of one name: start all, their idle wakeups,
#             --check --min-peers PEERS (with and without --max-age),
#             --status, --stop
#
# It installs its anchors if missing (apt-get: hyperfine daemon gcc python3),
# builds the binary the Debian package ships (`cargo build --release
# --target ARCH-unknown-linux-musl`, adding the target with rustup if
# missing), and cleans up every process and file it started, also on failure
# or Ctrl-C. Knobs (environment):
#   RDAEMON_BIN=path   measure this binary instead of building one
#   TARGET=triple      build for this target instead (e.g. x86_64-unknown-linux-gnu)
#   START_RUNS=60 RUNNING_RUNS=40 CHECK_RUNS=1000 IDLE_SECS=10 PEERS=1024
#   ROUNDS=3           start and check runs are split into this many hyperfine
#                      rounds, each in a different order, and pooled, so that
#                      a burst of load elsewhere does not land on one tool
#   SKIP_CARGO_BENCH=1 skip the divan run; SKIP_SCALE=1 skip the scale part
#   ONLY=start,check   run only these parts (start check footprint heartbeat scale)
#   LOAD=2             keep this many CPU-bound processes running beside the
#                      measurements (the loaded case: a busy 2-core host)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-$repo/target/bench/compare.md}
START_RUNS=${START_RUNS:-60}
RUNNING_RUNS=${RUNNING_RUNS:-40}
CHECK_RUNS=${CHECK_RUNS:-1000}
ROUNDS=${ROUNDS:-3}
IDLE_SECS=${IDLE_SECS:-10}
PEERS=${PEERS:-1024}
LOAD=${LOAD:-0}
ONLY=${ONLY:-start,check,footprint,heartbeat,scale}
[[ ${SKIP_CARGO_BENCH:-} ]] && ONLY=${ONLY//heartbeat/}
[[ ${SKIP_SCALE:-} ]] && ONLY=${ONLY//scale/}
want() { [[ ,$ONLY, == *,$1,* ]]; }
log() { printf '== %s\n' "$*" >&2; }

# --- anchors ---------------------------------------------------------------
need=()
command -v hyperfine >/dev/null || need+=(hyperfine)
command -v daemon >/dev/null || need+=(daemon)
command -v start-stop-daemon >/dev/null || need+=(dpkg)
command -v flock >/dev/null || need+=(util-linux)
command -v cc >/dev/null || need+=(gcc)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo)
    log "installing ${need[*]}"
    "${sudo[@]}" apt-get install -y "${need[@]}" ||
        { "${sudo[@]}" apt-get update && "${sudo[@]}" apt-get install -y "${need[@]}"; }
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if want scale && [[ $(ulimit -n) != unlimited ]] && (($(ulimit -n) < 4 * PEERS)); then
    echo "compare.sh: ulimit -n is $(ulimit -n); the scale part needs $((4 * PEERS))" >&2
    exit 1
fi
# Each supervisor needs an inotify instance; past the per-user limit (128 by
# default) it falls back to a 1 s timer. The scale part measures the design,
# so it raises the limit for the run (as root) and restores it afterwards;
# the report says which limit applied.
inotify_limit=/proc/sys/fs/inotify/max_user_instances
inotify_before=$(cat "$inotify_limit" 2>/dev/null || echo 0)

# --- build -----------------------------------------------------------------
if [[ -z ${RDAEMON_BIN:-} ]]; then
    target=${TARGET:-$(uname -m)-unknown-linux-musl}
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
    log "cargo build --release --target $target"
    (cd "$repo" && cargo build --release --quiet --target "$target")
    RDAEMON_BIN=$repo/target/$target/release/rdaemon
fi

# --- work directory and cleanup ---------------------------------------------
# daemon(1) refuses (as root) to run a program below a group- or
# world-writable directory such as /tmp, so the work directory lives under
# target/ (0700 itself).
mkdir -p "$repo/target"
W=$(mktemp -d "$repo/target/rdaemon-compare.XXXXXX")
BIN=$W/bin/rdaemon
mkdir -p "$W/bin" "$W/rd" "$W/dd" "$W/scale" "$W/res"

# Every process this script starts has $W in its command line (the PID
# directory, the pidfile, or the COMMAND copied into $W/bin).
our_pids() {
    # The pattern comes on stdin, so grep's own command line does not match.
    # shellcheck disable=SC2062 # the glob names files, not a pattern
    printf '%s\n' "$W" | grep -alFf - /proc/[0-9]*/cmdline 2>/dev/null |
        sed -n 's|^/proc/\([0-9]*\)/cmdline$|\1|p' | grep -vxF -e "$$" -e "$BASHPID" || true
}

cleanup() {
    local rc=$? pids i
    set +e
    trap - EXIT INT TERM
    if [[ -x $BIN ]]; then
        for name in st run ck fp fpq; do
            "$BIN" --stop "$name" --pid-dir "$W/rd" --timeout 2 >/dev/null 2>&1
        done
        "$BIN" --stop sc --pid-dir "$W/scale" --timeout 2 >/dev/null 2>&1
    fi
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(our_pids)
        [[ -z $pids ]] && break
        # shellcheck disable=SC2086
        if ((i < 6)); then kill -TERM $pids 2>/dev/null; else kill -KILL $pids 2>/dev/null; fi
        sleep 0.2
    done
    pids=$(our_pids)
    [[ -n $pids ]] && echo "compare.sh: could not stop: $pids" >&2
    rm -rf "$W"
    if [[ -w $inotify_limit ]] && (($(cat "$inotify_limit") != inotify_before)); then
        echo "$inotify_before" >"$inotify_limit"
    fi
    exit "$rc"
}
trap cleanup EXIT
if want scale && ((inotify_before < PEERS + 64)) && [[ $EUID -eq 0 ]]; then
    echo $((PEERS + 64)) >"$inotify_limit"
fi
trap 'exit 130' INT
trap 'exit 143' TERM

# A private copy: target/release is shared, and a concurrent build must not
# swap the binary under the benchmark.
cp "$RDAEMON_BIN" "$BIN"
cp "$(command -v sleep)" "$W/bin/sleep"
cp "$(command -v sleep)" "$W/bin/scale-sleep"
# Static where libc.a is installed, so that COMMAND's main() follows its
# exec as closely as possible (no dynamic loader in between).
cc -O2 -static -o "$W/bin/mark" "$here/mark.c" 2>/dev/null || cc -O2 -o "$W/bin/mark" "$here/mark.c"

# stop.sh TOOL NAME: stops what that tool started under NAME and waits until
# it is gone (hyperfine --prepare runs it before every timed start).
cat >"$W/stop.sh" <<EOF
#!/usr/bin/env bash
W='$W'; BIN='$BIN'
case \$1 in
rd) "\$BIN" --stop "\$2" --pid-dir "\$W/rd" --timeout 5 >/dev/null ;;
ssd) start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/1 --remove-pidfile --pidfile "\$W/ssd-\$2.pid" ;;
dd)
    daemon --name "\$2" --pidfiles "\$W/dd" --stop 2>/dev/null
    for _ in \$(seq 500); do
        daemon --name "\$2" --pidfiles "\$W/dd" --running || break
        sleep 0.01
    done ;;
esac
exit 0
EOF

# The three ways to start COMMAND under NAME (argv words, no shell).
start_cmd() { # TOOL NAME COMMAND...
    local tool=$1 name=$2
    shift 2
    case $tool in
    rd) echo "$BIN --name $name --pid-dir $W/rd -- $*" ;;
    ssd) echo "start-stop-daemon --start --background --make-pidfile --pidfile $W/ssd-$name.pid --exec $1 -- ${*:2}" ;;
    dd) echo "daemon --name $name --pidfiles $W/dd -- $*" ;;
    esac
}

run_start() { # TOOL NAME COMMAND...: start it now
    local argv
    read -ra argv <<<"$(start_cmd "$@")"
    "${argv[@]}" >/dev/null
}

# The loaded case: LOAD busy loops for the whole run (each has $W in its
# command line, so cleanup stops them like everything else).
for ((i = 0; i < LOAD; i++)); do
    bash -c 'while :; do :; done' "$W/load" &
done

HF=(hyperfine -N --style basic)
uptime >"$W/res/uptime-start"

# --- start -----------------------------------------------------------------
if want start; then
    log "start: caller returns (hyperfine, $START_RUNS runs each in $ROUNDS rounds)"
    declare -A label=([rd]=rdaemon [ssd]=start-stop-daemon [dd]=daemon)
    tools=(rd ssd dd)
    for ((r = 0; r < ROUNDS; r++)); do
        args=()
        for ((k = 0; k < ${#tools[@]}; k++)); do # a different order each round
            t=${tools[(r + k) % ${#tools[@]}]}
            args+=(--prepare "bash $W/stop.sh $t st" -n "${label[$t]}" "$(start_cmd "$t" st "$W/bin/sleep" 1000)")
        done
        "${HF[@]}" --warmup 3 --runs "$((START_RUNS / ROUNDS))" --export-json "$W/res/start-$r.json" \
            "${args[@]}" >>"$W/res/start.txt" 2>&1 || { cat "$W/res/start.txt" >&2; exit 1; }
        for t in rd ssd dd; do bash "$W/stop.sh" "$t" st; done
    done

    log "start: until COMMAND runs ($RUNNING_RUNS rounds, tools interleaved)"
    : >"$W/res/running.tsv"
    exec {idle}<> <(:) # read -t on this never gets data: a sleep without a fork
    mark=$W/mark
    for ((i = 0; i < RUNNING_RUNS; i++)); do
        for t in rd ssd dd direct; do
            rm -f "$mark"
            if [[ $t == direct ]]; then
                t0=$EPOCHREALTIME
                "$W/bin/mark" "$mark" &
                direct_pid=$!
                t1=$EPOCHREALTIME
            else
                read -ra argv <<<"$(start_cmd "$t" run "$W/bin/mark" "$mark")"
                t0=$EPOCHREALTIME
                "${argv[@]}" >/dev/null
                t1=$EPOCHREALTIME
            fi
            for _ in $(seq 10000); do
                [[ -s $mark ]] && break
                read -r -t 0.0005 -u "$idle" || true
            done
            [[ -s $mark ]] || { echo "compare.sh: $t never ran COMMAND" >&2; exit 1; }
            printf '%s\t%s\t%s\t%s\n' "$t" "$t0" "$t1" "$(<"$mark")" >>"$W/res/running.tsv"
            if [[ $t == direct ]]; then
                kill "$direct_pid"
                wait "$direct_pid" 2>/dev/null || true
            else
                bash "$W/stop.sh" "$t" run
            fi
        done
    done
fi

# --- check -----------------------------------------------------------------
if want check; then
    log "check: $CHECK_RUNS runs each"
    for t in rd ssd dd; do run_start "$t" ck "$W/bin/sleep" 1000; done
    for _ in $(seq 500); do daemon --name ck --pidfiles "$W/dd" --running && break; sleep 0.01; done
    # Sanity: every probe must see its daemon running.
    "$BIN" --check ck --pid-dir "$W/rd"
    start-stop-daemon --status --pidfile "$W/ssd-ck.pid"
    daemon --name ck --pidfiles "$W/dd" --running
    if flock -n "$W/rd/ck.1.pid" true; then echo "compare.sh: flock did not see the lock" >&2; exit 1; fi
    probes=(
        "rdaemon --check" "$BIN --check ck --pid-dir $W/rd"
        "rdaemon --check --max-age 60" "$BIN --check ck --max-age 60 --pid-dir $W/rd"
        "start-stop-daemon --status" "start-stop-daemon --status --pidfile $W/ssd-ck.pid"
        "flock -n F true" "flock -n $W/rd/ck.1.pid true"
        "daemon --running" "daemon --name ck --pidfiles $W/dd --running"
        "true" "true"
    )
    n=$((${#probes[@]} / 2))
    for ((r = 0; r < ROUNDS; r++)); do
        args=()
        for ((k = 0; k < n; k++)); do # a different order each round
            j=$(((r + k) % n))
            args+=(-n "${probes[2 * j]}" "${probes[2 * j + 1]}")
        done
        # -i: `flock -n F true` exits 1 on a held lock, which is the answer.
        "${HF[@]}" -i --warmup 50 --runs "$((CHECK_RUNS / ROUNDS))" --export-json "$W/res/check-$r.json" \
            "${args[@]}" >>"$W/res/check.txt" 2>&1 || { cat "$W/res/check.txt" >&2; exit 1; }
    done
    # Syscalls per invocation, the one number here that load cannot blur.
    if command -v strace >/dev/null; then
        for ((j = 0; j < n; j++)); do
            read -ra argv <<<"${probes[2 * j + 1]}"
            strace -f -c -o "$W/res/strace-$j" "${argv[@]}" >/dev/null 2>&1 || true
            printf '%s\t%s\n' "${probes[2 * j]}" \
                "$(awk '$NF == "total" { print $4 }' "$W/res/strace-$j")" \
                >>"$W/res/syscalls.tsv"
        done
    fi
    for t in rd ssd dd; do bash "$W/stop.sh" "$t" ck; done
fi

# --- supervisor footprint ----------------------------------------------------
if want footprint; then
    log "footprint: idle supervisors over ${IDLE_SECS}s"
    "$BIN" --name fp --pid-dir "$W/rd" -- "$W/bin/sleep" 1000
    "$BIN" --name fpq --pid-dir "$W/rd" --heartbeat-interval 10 -- "$W/bin/sleep" 1000
    daemon --respawn --name fp --pidfiles "$W/dd" -- "$W/bin/sleep" 1000
    "$W/bin/sleep" 1000 &
    floor_pid=$!
    for _ in $(seq 500); do [[ -s $W/dd/fp.pid ]] && break; sleep 0.01; done
    sleep 1
    declare -A fp_pid=(
        [rdaemon]=$(<"$W/rd/fp.1.pid")
        [rdaemon-hb]=$(<"$W/rd/fpq.1.pid")
        [daemon]=$(<"$W/dd/fp.pid")
        [sleep]=$floor_pid
    )
    sample() { # PID -> "rss_kb anon_kb file_kb pss_kb uss_kb vol_ctxt"
        local s=/proc/$1/status r=/proc/$1/smaps_rollup
        printf '%s %s %s %s %s %s\n' \
            "$(awk '/^VmRSS:/ { print $2 }' "$s")" "$(awk '/^RssAnon:/ { print $2 }' "$s")" \
            "$(awk '/^RssFile:/ { print $2 }' "$s")" "$(awk '/^Pss:/ { print $2 }' "$r")" \
            "$(awk '/^Private_(Clean|Dirty):/ { n += $2 } END { print n }' "$r")" \
            "$(awk '/^voluntary_ctxt_switches:/ { print $2 }' "$s")"
    }
    declare -A before
    for k in "${!fp_pid[@]}"; do before[$k]=$(sample "${fp_pid[$k]}"); done
    sleep "$IDLE_SECS"
    : >"$W/res/footprint.tsv"
    for k in "${!fp_pid[@]}"; do
        read -r rss anon file pss uss v0 <<<"${before[$k]}"
        read -r _ _ _ _ _ v1 <<<"$(sample "${fp_pid[$k]}")"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$k" "$rss" "$anon" "$file" "$pss" "$uss" "$((v1 - v0))" "$IDLE_SECS" >>"$W/res/footprint.tsv"
    done
    bash "$W/stop.sh" rd fp
    bash "$W/stop.sh" rd fpq
    bash "$W/stop.sh" dd fp
    kill "$floor_pid"
    wait "$floor_pid" 2>/dev/null || true
fi

# --- heartbeat (divan) --------------------------------------------------------
if want heartbeat; then
    log "heartbeat: cargo bench --bench heartbeat"
    (cd "$repo" && cargo bench --quiet --bench heartbeat) >"$W/res/divan.txt" 2>&1 ||
        { cat "$W/res/divan.txt" >&2; exit 1; }
fi

# --- scale -------------------------------------------------------------------
if want scale; then
    log "scale: starting $PEERS peers"
    t0=$EPOCHREALTIME
    for ((i = 0; i < PEERS; i++)); do
        "$BIN" --name sc --max-peers "$PEERS" --pid-dir "$W/scale" -- "$W/bin/scale-sleep" 1000
    done
    t1=$EPOCHREALTIME
    echo "start_all $t0 $t1" >"$W/res/scale.txt"
    echo "inotify_limit $(cat "$inotify_limit") $(cat "$W"/scale/sc.*.state | grep -c answers_probes)" >>"$W/res/scale.txt"
    "$BIN" --check sc --min-peers "$PEERS" --pid-dir "$W/scale"
    log "scale: idle wakeups of all $PEERS supervisors over ${IDLE_SECS}s"
    ctxt_sum() {
        local f n=0 v
        for f in "$W"/scale/sc.*.pid; do
            v=$(awk '/^voluntary_ctxt_switches:/ { print $2 }' "/proc/$(<"$f")/status" 2>/dev/null) || v=0
            n=$((n + ${v:-0}))
        done
        echo "$n"
    }
    c0=$(ctxt_sum)
    sleep "$IDLE_SECS"
    c1=$(ctxt_sum)
    echo "idle_wakeups $((c1 - c0)) $IDLE_SECS" >>"$W/res/scale.txt"
    log "scale: --check and --status"
    "${HF[@]}" --warmup 3 --runs 30 --export-json "$W/res/scale-check.json" \
        -n "scale check" "$BIN --check sc --min-peers $PEERS --pid-dir $W/scale" >/dev/null 2>&1
    "${HF[@]}" --warmup 3 --runs 30 --export-json "$W/res/scale-checkage.json" \
        -n "scale check max-age" "$BIN --check sc --min-peers $PEERS --max-age 60 --pid-dir $W/scale" >/dev/null 2>&1
    "${HF[@]}" --warmup 1 --runs 10 --export-json "$W/res/scale-status.json" \
        -n "scale status" "$BIN --status sc --pid-dir $W/scale" >/dev/null 2>&1
    log "scale: --stop"
    t0=$EPOCHREALTIME
    "$BIN" --stop sc --pid-dir "$W/scale"
    t1=$EPOCHREALTIME
    echo "stop $t0 $t1" >>"$W/res/scale.txt"
    # Processes of the scale test that are still alive (zombies waiting for
    # init to reap them do not count): at once, and after a second.
    scale_alive() {
        local f n=0
        # shellcheck disable=SC2062 # the glob names files, not a pattern
        for f in $(printf '%s\n' "$W/bin/scale-sleep" "$W/scale" | grep -alFf - /proc/[0-9]*/cmdline 2>/dev/null); do
            [[ $(awk '{ print $3 }' "${f%/cmdline}/stat" 2>/dev/null) == [^XZ]* ]] && n=$((n + 1))
        done
        echo "$n"
    }
    echo "left $(scale_alive)" >>"$W/res/scale.txt"
    sleep 1
    echo "left_1s $(scale_alive)" >>"$W/res/scale.txt"
fi
uptime >"$W/res/uptime-end"

# --- report ------------------------------------------------------------------
mkdir -p "$(dirname "$out")"
size=$(stat -c %s "$BIN")
commit=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
LOAD=$LOAD python3 - "$W/res" "$RDAEMON_BIN" "$size" "$PEERS" "$commit" "$(ulimit -n)" >"$out" <<'PY'
import json, os, statistics, subprocess, sys

res, binary, size, peers, commit, nofile = sys.argv[1:7]
size, peers = int(size), int(peers)

def path(name):
    p = os.path.join(res, name)
    return p if os.path.exists(p) else None

def hf(prefix):
    """Pools hyperfine's runs over PREFIX*.json: {command: {"median": s}}."""
    pooled = {}
    for f in sorted(os.listdir(res)):
        if f.startswith(prefix) and f.endswith(".json"):
            for r in json.load(open(os.path.join(res, f)))["results"]:
                pooled.setdefault(r["command"], []).extend(r["times"])
    return {k: {"median": statistics.median(v), "runs": len(v)} for k, v in pooled.items()}

def ms(x):
    return f"{x * 1e3:.2f} ms"

def verdict(ok):
    return "**yes**" if ok else "**no**"

rows = []  # (measure, rdaemon, anchors, ratio, target, met)

start = hf("start-")
if start:
    rd, ssd, dd = (start[k]["median"] for k in ("rdaemon", "start-stop-daemon", "daemon"))
    rows.append(("start: caller returns (median)", ms(rd),
                 f"start-stop-daemon {ms(ssd)}; daemon {ms(dd)}",
                 f"{rd / ssd:.2f}x s-s-d", "≤ 1.5x s-s-d", verdict(rd / ssd <= 1.5)))
p = path("running.tsv")
if p:
    by = {}
    for line in open(p):
        t, t0, t1, t2 = line.split()
        by.setdefault(t, []).append((float(t1) - float(t0), float(t2) - float(t0)))
    run = {t: statistics.median(r for _, r in v) for t, v in by.items()}
    ret = {t: statistics.median(r for r, _ in v) for t, v in by.items()}
    lag = {t: statistics.median(r - q for q, r in v) for t, v in by.items()}
    early = {t: sum(1 for q, r in v if q < r) for t, v in by.items()}
    n = len(by["rd"])
    rows.append(("start: COMMAND's main() runs (median, since launch)", ms(run["rd"]),
                 f"start-stop-daemon {ms(run['ssd'])}; daemon {ms(run['dd'])}; "
                 f"plain fork+exec from bash {ms(run['direct'])}",
                 f"{run['rd'] / run['ssd']:.2f}x s-s-d", "(info)", ""))
    rows.append(("start: COMMAND's main() runs this long after the caller returned (median)",
                 f"{ms(lag['rd'])} ({early['rd']} of {n} returned first)",
                 f"start-stop-daemon {ms(lag['ssd'])} ({early['ssd']} of {n}); "
                 f"daemon {ms(lag['dd'])} ({early['dd']} of {n})",
                 "", "(info: rdaemon returns after exec, not after main)", ""))
    rows.append(("start: caller returns, same rounds (median)", ms(ret["rd"]),
                 f"start-stop-daemon {ms(ret['ssd'])}; daemon {ms(ret['dd'])}",
                 f"{ret['rd'] / ret['ssd']:.2f}x s-s-d", "(cross-check)", ""))
check = hf("check-")
if check:
    rd, t = check["rdaemon --check"]["median"], check["true"]["median"]
    others = "; ".join(f"{k} {ms(v['median'])}" for k, v in check.items()
                       if k not in ("rdaemon --check",))
    rows.append(("check: one running daemon (median)", ms(rd), others,
                 f"{rd / t:.2f}x true", "≤ 1.1x true", verdict(rd / t <= 1.1)))
p = path("syscalls.tsv")
if p:
    sc = dict(line.rstrip("\n").split("\t") for line in open(p))
    rd = sc.pop("rdaemon --check")
    rows.append(("check: syscalls per invocation (strace -f -c)", rd,
                 "; ".join(f"{k} {v}" for k, v in sc.items()), "", "(info)", ""))
p = path("footprint.tsv")
if p:
    fp = {}
    for line in open(p):
        k, rss, anon, file, pss, uss, dv, secs = line.split()
        fp[k] = dict(rss=int(rss), anon=int(anon), file=int(file), pss=int(pss), uss=int(uss),
                     wps=int(dv) / float(secs))
    r, d, q = fp["rdaemon"], fp["daemon"], fp["rdaemon-hb"]
    def mem(x):
        return (f"{x['rss']} kB (anon {x['anon']}, file {x['file']}; "
                f"PSS {x['pss']}, USS {x['uss']})")
    rows.append(("supervisor VmRSS, idle", mem(r),
                 f"daemon --respawn {mem(d)}; a plain `sleep 1000` {mem(fp['sleep'])}",
                 f"{r['rss'] / d['rss']:.2f}x daemon", "≤ 1200 kB", verdict(r["rss"] <= 1200)))
    rows.append(("supervisor wakeups/s, idle", f"{r['wps']:.2f}",
                 f"daemon --respawn {d['wps']:.2f}; rdaemon --heartbeat-interval 10 "
                 f"(a timer, as before on-demand heartbeats): {q['wps']:.2f}",
                 "", "0", verdict(r["wps"] == 0)))
p = path("divan.txt")
if p:
    def to_ns(text):
        v, unit = text.split()
        return float(v) * {"ps": 1e-3, "ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}[unit]
    med, parent = {}, ""
    for line in open(p):
        cols = [c.strip() for c in line.strip().lstrip("│").split("│")]
        if len(cols) < 6:
            continue
        head = cols[0].lstrip("├╰─ ").split()
        if len(head) == 3:  # name, fastest value, unit
            key = head[0] if line.startswith(("├", "╰")) else f"{parent}/{head[0]}"
            med[key] = to_ns(cols[2])
        elif len(head) == 1:
            parent = head[0]
    if "heartbeat" in med:
        hb = med["heartbeat"]
        rows.append(("heartbeat() per call (divan median)", f"{hb:.2f} ns", "", "", "≤ 20 ns",
                     verdict(hb <= 20)))
    if "start_stop" in med:
        rows.append(("library start()+stop() (divan median)", f"{med['start_stop'] / 1e3:.1f} µs",
                     "", "", "(info)", ""))
    for k in sorted(k for k in med if k.startswith("check/")):
        rows.append((f"library inspect::check, {k.split('/')[1]} peer(s), in-process",
                     f"{med[k] / 1e3:.1f} µs", "", "", "(info)", ""))
p = path("scale.txt")
if p:
    sc = {}
    for line in open(p):
        k, *v = line.split()
        sc[k] = v
    start_all = float(sc["start_all"][1]) - float(sc["start_all"][0])
    rows.append((f"scale: start {peers} peers, one after another", f"{start_all:.1f} s",
                 "", f"{start_all / peers * 1e3:.1f} ms each", "(info)", ""))
    if "idle_wakeups" in sc:
        n, secs = int(sc["idle_wakeups"][0]), float(sc["idle_wakeups"][1])
        limit, watched = sc["inotify_limit"]
        rows.append((f"scale: idle wakeups of all {peers} supervisors", f"{n / secs:.2f}/s in all",
                     f"{watched} of {peers} answer on demand (fs.inotify.max_user_instances "
                     f"{limit} for the run)", "", "(info)", ""))
    c = hf("scale-check")
    if c:
        m = next(iter(c.values()))["median"]
        rows.append((f"scale: --check --min-peers {peers} (median)", ms(m), "", "",
                     "≤ 10 ms", verdict(m <= 0.010)))
    c = hf("scale-checkage")
    if c:
        m = next(iter(c.values()))["median"]
        rows.append((f"scale: --check --min-peers {peers} --max-age 60 (median; every "
                     f"supervisor asked and answering)", ms(m), "", "", "(info)", ""))
    s = hf("scale-status")
    if s:
        m = next(iter(s.values()))["median"]
        rows.append((f"scale: --status (median)", ms(m), "", "", "(info)", ""))
    stop = float(sc["stop"][1]) - float(sc["stop"][0])
    rows.append((f"scale: --stop all {peers} (one run)", f"{stop:.2f} s",
                 f"live processes left: {sc['left'][0]} at return, {sc['left_1s'][0]} a second later",
                 "", "≤ 2 s", verdict(stop <= 2)))

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"

print("| measure | rdaemon | anchors (same run) | ratio | target | met |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")
print()
print(f"- binary: `{binary}` ({size} bytes), built from `{commit}`; ulimit -n {nofile}")
cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
print(f"- machine: {sh('nproc')} CPUs, {cpu}, "
      f"kernel {sh('uname -r')}, {sh('rustc --version')}")
print(f"- tools: {sh('hyperfine --version')}, daemon {sh('daemon --version 2>&1 | head -1')}, "
      f"start-stop-daemon {sh('start-stop-daemon --version | head -1')}")
print(f"- busy loops beside the measurements (LOAD): {os.environ.get('LOAD', '0')}")
print(f"- load: before `{open(os.path.join(res, 'uptime-start')).read().strip()}`, "
      f"after `{open(os.path.join(res, 'uptime-end')).read().strip()}`")
PY
cat "$out"
