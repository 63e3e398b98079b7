#!/usr/bin/env python3
"""A/B of rdaemon start return: two or more rdaemon binaries, shuffled in
every round so that drift in the machine's state falls on all alike.

    python3 benches/ab-start.py ROUNDS BIN_A BIN_B [BIN...]

Each round, for each binary in a random order: stop its previous start
(`--stop`), pause 5 ms, then time `rdaemon --name st -- sleep 1000` from
`posix_spawn` to the caller's exit. Prints the median and the first
quartile per binary. Python's own spawn and wait add a constant, so
compare the binaries with each other, not with benches/compare.sh.
Work files live in a temporary directory under target/.
"""
import os
import random
import shutil
import statistics
import sys
import tempfile
import time

rounds = int(sys.argv[1])
bins = sys.argv[2:]
if len(bins) < 2:
    sys.exit(__doc__)
target = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target")
os.makedirs(target, exist_ok=True)
work = tempfile.mkdtemp(prefix="ab-start.", dir=target)
cfg = []
for i, b in enumerate(bins):
    d = f"{work}/{i}"
    os.makedirs(d + "/rd", mode=0o700)
    os.makedirs(d + "/bin")
    shutil.copy(b, d + "/bin/rdaemon")
    shutil.copy("/bin/sleep", d + "/bin/sleep")
    cfg.append((f"{i}:{os.path.basename(b)}", d))
times = {name: [] for name, _ in cfg}
null = os.open("/dev/null", os.O_RDWR)


def run(argv):
    actions = [(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, null, 1)]
    pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions)
    os.waitpid(pid, 0)


try:
    for _ in range(rounds):
        order = list(cfg)
        random.shuffle(order)
        for name, d in order:
            run([d + "/bin/rdaemon", "--stop", "st", "--pid-dir", d + "/rd"])
            time.sleep(0.005)
            t = time.perf_counter()
            run([d + "/bin/rdaemon", "--name", "st", "--pid-dir", d + "/rd", "--",
                 d + "/bin/sleep", "1000"])
            times[name].append(time.perf_counter() - t)
finally:
    for _, d in cfg:
        run([d + "/bin/rdaemon", "--stop", "st", "--pid-dir", d + "/rd"])
    shutil.rmtree(work)
for name, v in times.items():
    v.sort()
    print(f"{name:24s} median {statistics.median(v) * 1000:.3f} ms"
          f"  p25 {v[len(v) // 4] * 1000:.3f} ms  n={len(v)}")
