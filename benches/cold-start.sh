#!/usr/bin/env bash
# cold-start.sh: start time of rdaemon and start-stop-daemon, warm and cold.
#
# compare.sh times each tool's start right after that tool's own stop, as
# hyperfine's --prepare runs it. That leaves the CPUs in different states:
# `rdaemon --stop` returns the moment the slot is released, with both CPUs
# still busy, while `start-stop-daemon --stop --retry` polls with sleeps.
# rdaemon's start hands work between more processes (caller, intermediate
# child, supervisor, COMMAND), so it gains more from warm CPUs and loses
# more from idle ones. This script puts both tools in the same state: it
# measures each start after IDLE seconds of quiet, for each IDLE given.
#
#   benches/cold-start.sh            IDLES="0 0.05" ROUNDS=6 RUNS=30
#   RDAEMON_BIN=path benches/cold-start.sh
#
# Prints a markdown table of pooled medians. Needs hyperfine and python3;
# cleans up every process it started.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
IDLES=${IDLES:-"0 0.05"}
ROUNDS=${ROUNDS:-6}
RUNS=${RUNS:-30}
target=${TARGET:-$(uname -m)-unknown-linux-musl}
RDAEMON_BIN=${RDAEMON_BIN:-$root/target/$target/release/rdaemon}
[[ -x $RDAEMON_BIN ]] || { echo "cold-start.sh: build first: cargo build --release --target $target (or set RDAEMON_BIN)" >&2; exit 1; }
command -v hyperfine >/dev/null || { echo "cold-start.sh: needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }

mkdir -p "$root/target/bench"
W=$(mktemp -d "$root/target/bench/cold.XXXXXX")
mkdir -p "$W/bin" "$W/rd" "$W/res"
cp "$RDAEMON_BIN" "$W/bin/rdaemon"
cp "$(command -v sleep)" "$W/bin/sleep"
RD=$W/bin/rdaemon
stop_all() {
    "$RD" --stop cold --pid-dir "$W/rd" --timeout 5 >/dev/null 2>&1 || true
    start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/1 --remove-pidfile --pidfile "$W/ssd.pid" || true
}
trap 'stop_all; rm -rf "$W"' EXIT

for idle in $IDLES; do
    for ((r = 0; r < ROUNDS; r++)); do
        rd=(--prepare "bash -c '\"$RD\" --stop cold --pid-dir \"$W/rd\" --timeout 5 >/dev/null; sleep $idle'"
            -n rdaemon "$RD --name cold --pid-dir $W/rd -- $W/bin/sleep 1000")
        ssd=(--prepare "bash -c 'start-stop-daemon --stop --quiet --oknodo --retry TERM/5/KILL/1 --remove-pidfile --pidfile \"$W/ssd.pid\"; sleep $idle'"
            -n start-stop-daemon "start-stop-daemon --start --background --make-pidfile --pidfile $W/ssd.pid --exec $W/bin/sleep -- 1000")
        if ((r % 2)); then args=("${ssd[@]}" "${rd[@]}"); else args=("${rd[@]}" "${ssd[@]}"); fi
        hyperfine -N --style none --warmup 2 --runs "$RUNS" --export-json "$W/res/$idle-$r.json" "${args[@]}" \
            >/dev/null 2>"$W/res/hyperfine.err" || { cat "$W/res/hyperfine.err" >&2; exit 1; }
        stop_all
    done
done

python3 - "$W/res" "$IDLES" "$ROUNDS" "$RUNS" <<'PY'
import glob, json, statistics as st, sys
res, idles, rounds, runs = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
print(f"| quiet before each start | rdaemon | start-stop-daemon | ratio |")
print("|---|---|---|---|")
for idle in idles:
    pool = {}
    for f in glob.glob(f"{res}/{idle}-*.json"):
        for r in json.load(open(f))["results"]:
            pool.setdefault(r["command"], []).extend(r["times"])
    rd, ssd = st.median(pool["rdaemon"]) * 1e3, st.median(pool["start-stop-daemon"]) * 1e3
    print(f"| {float(idle) * 1000:g} ms | {rd:.2f} ms | {ssd:.2f} ms | {rd / ssd:.2f}x |")
print(f"\n{rounds} hyperfine rounds of {runs} starts per tool and gap, alternating order; pooled medians.")
PY
