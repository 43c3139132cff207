#!/usr/bin/env python3
"""AFL++ executions per second, side by side in one run, with the real afl-fuzz.

usage: bench/afl.py [-t SECONDS] [-n ROUNDS] [--rewire PATH]

For each target, in interleaved rounds (so that the machine's drift hits every mode alike):
  afl-cc     the target built with afl-clang-fast (AFL++'s compile-time instrumentation)
  fork       rewire run -t afl on the same source built with plain gcc -O2 (fork server)
  persistent rewire's persistent mode on its fuzz_one function
Targets: bench/afl/ini.c and bench/afl/tlv.c (parsers written for this benchmark) and
Debian's readelf (-a @@, binary only: rewire's fork server alone). Each run is
afl-fuzz -s 1 -V SECONDS with the same seeds; the table shows the median execs/s, the
stability and the map density afl-fuzz reports, and each mode's ratio to afl-cc.
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = {
    "ini": [b"[main]\nname = \"rewire\"\ncount = 12\n; comment\n[other]\nx=1\n"],
    "tlv": [b"\x89TLV\r\n\x1a\n" + b"\x00\x00\x00\x00END " + b"\x00" * 4],
    "readelf": None,
}


def build(workdir):
    out = {}
    for name in ("ini", "tlv"):
        src = os.path.join(HERE, "afl", name + ".c")
        plain, inst = os.path.join(workdir, name), os.path.join(workdir, name + ".afl")
        subprocess.run(["gcc", "-O2", "-o", plain, src], check=True)
        subprocess.run(["afl-clang-fast", "-O2", "-o", inst, src], check=True, env=dict(os.environ, AFL_QUIET="1"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nm = subprocess.run(["nm", plain], capture_output=True, text=True, check=True).stdout
        addr = next("0x" + l.split()[0] for l in nm.splitlines() if l.endswith(" T fuzz_one"))
        out[name] = (plain, inst, addr)
    return out


def seeds(workdir, name):
    d = os.path.join(workdir, "in-" + name)
    os.makedirs(d, exist_ok=True)
    if SEEDS[name] is None:
        shutil.copy("/bin/true", os.path.join(d, "seed"))
    else:
        for i, s in enumerate(SEEDS[name]):
            with open(os.path.join(d, "seed%d" % i), "wb") as f:
                f.write(s)
    return d


def fuzz(workdir, seconds, indir, cmd, env):
    out = tempfile.mkdtemp(dir=workdir)
    e = dict(os.environ, AFL_NO_UI="1", AFL_SKIP_CPUFREQ="1", AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES="1", AFL_NO_AFFINITY="1", **env)
    subprocess.run(["afl-fuzz", "-s", "1", "-V", str(seconds), "-i", indir, "-o", out, "--"] + cmd, env=e,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 120)
    stats = {}
    with open(os.path.join(out, "default", "fuzzer_stats")) as f:
        for line in f:
            k, _, v = line.partition(":")
            stats[k.strip()] = v.strip()
    shutil.rmtree(out, ignore_errors=True)
    return float(stats["execs_per_sec"]), stats.get("stability", "?"), stats.get("bitmap_cvg", "?")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-t", type=int, default=30, help="seconds per afl-fuzz run")
    ap.add_argument("-n", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--rewire", default=shutil.which("rewire") or os.path.join(HERE, "..", "target", "release", "rewire"))
    a = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="rewire-afl-bench-")
    built = build(workdir)
    rw = [a.rewire, "run", "-t", "afl", "--"]
    modes = {}
    for name, (plain, inst, addr) in built.items():
        modes[(name, "afl-cc")] = ([inst, "@@"], {})
        modes[(name, "fork")] = (rw + [plain, "@@"], {})
        modes[(name, "persistent")] = (rw + [plain, "@@"], {"REWIRE_AFL_PERSISTENT_ADDR": addr})
    modes[("readelf", "fork")] = (rw + ["/usr/bin/readelf", "-a", "@@"], {})
    results = {k: [] for k in modes}
    for r in range(a.n):
        for (name, mode), (cmd, env) in modes.items():
            results[(name, mode)].append(fuzz(workdir, a.t, seeds(workdir, name), cmd, env))
            print(f"round {r + 1}: {name:8} {mode:10} {results[(name, mode)][-1][0]:8.0f} execs/s", file=sys.stderr)
    print(f"{'target':8} {'mode':10} {'execs/s':>9} {'vs afl-cc':>9} {'stability':>9} {'map':>7}")
    for (name, mode), runs in results.items():
        med = statistics.median(r[0] for r in runs)
        base = results.get((name, "afl-cc"))
        ratio = f"{med / statistics.median(r[0] for r in base):9.2f}" if base else f"{'-':>9}"
        print(f"{name:8} {mode:10} {med:9.0f} {ratio} {runs[-1][1]:>9} {runs[-1][2]:>7}")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
