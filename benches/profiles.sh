#!/usr/bin/env bash
# profiles.sh: what each `[profile.release]` setting buys, measured side by
# side in one run (the before/after table in BENCHMARKS.md).
#
# Usage: benches/profiles.sh [OUTPUT.md]   (default: target/bench/profiles.md)
#
# Builds the rdaemon binary once per variant below, each with Cargo's
# `--config profile.release.KEY=VALUE` overrides for all five keys, in its
# own target directory under target/profiles/,
# then measures every variant in the same hyperfine invocations:
#   size      the binary's size in bytes
#   check     `--check NAME` on one running daemon (median, hyperfine -N)
#   faults    page faults of that `--check` (perf stat, if perf works)
#   start     `--name NAME -- sleep 1000` until the caller returns (median)
#   rss       VmRSS of the idle supervisor, 1 s after start, and how much
#             of it is the rdaemon binary's own pages (from smaps)
# Knobs: CHECK_RUNS=1500 START_RUNS=90 ROUNDS=3 VARIANTS="base abort ..."
# (names below); runs are split over ROUNDS rounds in rotating order and
# pooled before taking medians.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
out=${1:-$repo/target/bench/profiles.md}
CHECK_RUNS=${CHECK_RUNS:-1500}
START_RUNS=${START_RUNS:-90}
ROUNDS=${ROUNDS:-3}

# name: opt-level lto codegen-units panic strip [RUSTFLAGS...]
# Every key is spelled out, so Cargo.toml's own [profile.release] does not
# leak in; `base` is Cargo's default release profile (strip = "debuginfo" is
# what Cargo does by default when debug info is off). The last variant also
# sets RUSTFLAGS, which is not a profile setting: it shows what linking
# glibc statically would add on top.
declare -A variant=(
    [base]='3 false 16 unwind debuginfo'
    [abort]='3 false 16 abort debuginfo'
    [lto]='3 fat 1 unwind debuginfo'
    [abort-lto]='3 fat 1 abort debuginfo'
    [abort-lto-strip]='3 fat 1 abort symbols'
    [abort-lto-strip-s]='s fat 1 abort symbols'
    [abort-lto-strip-z]='z fat 1 abort symbols'
    [abort-lto-strip-s-crt-static]='s fat 1 abort symbols -C target-feature=+crt-static'
    [abort-lto-strip-s-musl]='s fat 1 abort symbols'
)
# Variants built for another target than the host's (installed with rustup
# when missing). The musl one is what the Debian package ships.
musl=$(uname -m)-unknown-linux-musl
declare -A variant_target=([abort-lto-strip-s-musl]=$musl)
VARIANTS=${VARIANTS:-base abort lto abort-lto abort-lto-strip abort-lto-strip-s abort-lto-strip-z abort-lto-strip-s-crt-static abort-lto-strip-s-musl}
first=${VARIANTS%% *}
command -v hyperfine >/dev/null || apt-get install -y hyperfine

W=$(mktemp -d "$repo/target/rdaemon-profiles.XXXXXX")
cleanup() {
    local rc=$? pids
    set +e
    trap - EXIT INT TERM
    for v in $VARIANTS; do
        [[ -x $W/bin/$v ]] || continue
        "$W/bin/$v" --stop "st-$v" --pid-dir "$W/pids" --timeout 2 >/dev/null 2>&1
        "$W/bin/$v" --stop "fp-$v" --pid-dir "$W/pids" --timeout 2 >/dev/null 2>&1
    done
    [[ -x $W/bin/$first ]] && "$W/bin/$first" --stop ck --pid-dir "$W/pids" --timeout 2 >/dev/null 2>&1
    # shellcheck disable=SC2062 # the glob names files, not a pattern
    pids=$(printf '%s\n' "$W" | grep -alFf - /proc/[0-9]*/cmdline 2>/dev/null |
        sed -n 's|^/proc/\([0-9]*\)/cmdline$|\1|p' | grep -vxF -e "$$" || true)
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$W/bin" "$W/pids"
cp "$(command -v sleep)" "$W/bin/sleep"

for v in $VARIANTS; do
    read -r opt lto cgu panic strip flags <<<"${variant[$v]}"
    [[ $opt =~ ^[0-9]$ ]] || opt="\"$opt\""
    [[ $lto == false ]] || lto="\"$lto\""
    cfg=(--config "profile.release.opt-level=$opt" --config "profile.release.lto=$lto"
        --config "profile.release.codegen-units=$cgu" --config "profile.release.panic=\"$panic\""
        --config "profile.release.strip=\"$strip\"")
    printf '== building %s\n' "$v" >&2
    # With RUSTFLAGS, name the target explicitly so that they do not reach
    # proc-macros built for the host.
    target=() sub=release
    if [[ -n ${variant_target[$v]:-} ]]; then
        t=${variant_target[$v]}
        rustup target list --installed | grep -qx "$t" || rustup target add "$t"
        target=(--target "$t") sub=$t/release
    elif [[ -n ${flags:-} ]]; then
        host=$(rustc -vV | sed -n 's/^host: //p')
        target=(--target "$host") sub=$host/release
    fi
    (cd "$repo" && RUSTFLAGS="${flags:-}" cargo build --release --quiet --bin rdaemon \
        --target-dir "$repo/target/profiles/$v" "${target[@]}" "${cfg[@]}")
    cp "$repo/target/profiles/$v/$sub/rdaemon" "$W/bin/$v"
done

# The daemon every variant's --check looks at, started by the first variant.
"$W/bin/$first" --name ck --pid-dir "$W/pids" -- "$W/bin/sleep" 1000
read -ra names <<<"$VARIANTS"
n=${#names[@]}
# ROUNDS hyperfine rounds, each in a different order, pooled: a burst of
# load elsewhere then blurs every variant a little instead of one a lot.
for ((r = 0; r < ROUNDS; r++)); do
    check_args=() start_args=()
    for ((k = 0; k < n; k++)); do
        v=${names[(r + k) % n]}
        check_args+=(-n "$v" "$W/bin/$v --check ck --pid-dir $W/pids")
        start_args+=(--prepare "$W/bin/$v --stop st-$v --pid-dir $W/pids"
            -n "$v" "$W/bin/$v --name st-$v --pid-dir $W/pids -- $W/bin/sleep 1000")
    done
    printf '== round %d: check, start\n' "$r" >&2
    hyperfine -N --style none --warmup 30 --runs "$((CHECK_RUNS / ROUNDS))" --export-json "$W/check-$r.json" \
        "${check_args[@]}" -n true true >"$W/check.log" 2>&1 || { cat "$W/check.log" >&2; exit 1; }
    hyperfine -N --style none --warmup 3 --runs "$((START_RUNS / ROUNDS))" --export-json "$W/start-$r.json" \
        "${start_args[@]}" >"$W/start.log" 2>&1 || { cat "$W/start.log" >&2; exit 1; }
done
: >"$W/extra.tsv"
for v in $VARIANTS; do
    "$W/bin/$v" --stop "st-$v" --pid-dir "$W/pids" >/dev/null
    "$W/bin/$v" --name "fp-$v" --pid-dir "$W/pids" -- "$W/bin/sleep" 1000
done
sleep 1
for v in $VARIANTS; do
    sup=$(<"$W/pids/fp-$v.1.pid")
    rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$sup/status")
    # The part of it that is the rdaemon binary's own pages.
    own=$(awk -v bin="$W/bin/$v" '/^[0-9a-f]+-[0-9a-f]+ / { cur = $6 } /^Rss:/ && cur == bin { s += $2 } END { print s + 0 }' "/proc/$sup/smaps")
    faults=$(perf stat -x, -r 50 -e page-faults "$W/bin/$v" --check ck --pid-dir "$W/pids" 2>&1 >/dev/null |
        awk -F, '/page-faults/ { print $1 }' || true)
    printf '%s\t%s\t%s\t%s\n' "$v" "$(stat -c %s "$W/bin/$v")" "$rss/$own" "${faults:-n/a}" >>"$W/extra.tsv"
    "$W/bin/$v" --stop "fp-$v" --pid-dir "$W/pids" >/dev/null
done

mkdir -p "$(dirname "$out")"
python3 - "$W" "$VARIANTS" >"$out" <<'PY'
import json, sys
w, names = sys.argv[1], sys.argv[2].split()
import glob, statistics
def med(prefix):
    pooled = {}
    for f in glob.glob(f"{w}/{prefix}-*.json"):
        for r in json.load(open(f))["results"]:
            pooled.setdefault(r["command"], []).extend(r["times"])
    return {k: statistics.median(v) for k, v in pooled.items()}
check, start = med("check"), med("start")
extra = {l.split()[0]: l.split()[1:] for l in open(f"{w}/extra.tsv")}
print("| variant | size (bytes) | --check median | check / true | --check page faults | start returns (median) | supervisor VmRSS (of which the binary) |")
print("|---|---|---|---|---|---|---|")
for n in names:
    size, rss, faults = extra[n]
    print(f"| {n} | {int(size):,} | {check[n] * 1e3:.3f} ms | {check[n] / check['true']:.2f}x | {faults} "
          f"| {start[n] * 1e3:.2f} ms | {rss.split('/')[0]} kB ({rss.split('/')[1]} kB) |")
print(f"| `true` | | {check['true'] * 1e3:.3f} ms | 1.00x | | | |")
PY
cat "$out"
