#!/usr/bin/env python3
"""Merging a coverage campaign: `rewire cov report` on thousands of drcov files of `ls`,
beside `lcov -a` merging the same coverage as lcov tracefiles.

usage: bench/cov_merge.py [-n FILES] [--lcov-files N,N,...] [--rewire PATH]

Records `rewire run -t cov -- ls ...` with a few different arguments (different paths
through ls, libc and the loader), then writes FILES drcov files (default 10,000), each a
copy of one of those runs with a random tenth of its blocks left out, the way runs of one
program over a test suite or a fuzzing corpus differ. The same coverage goes into lcov
tracefiles (a source file per module, a line per block offset). Prints the time and the
peak RSS of `rewire cov report` on all FILES, and of `lcov -a` on the first N of the
tracefiles for each N of --lcov-files (default 100,1000); where N is less than FILES,
lcov's time for FILES is extrapolated linearly from the largest N, and says so.
Peak RSS is the measured program's own (see dbi.py's helper), not this script's.
"""
import argparse, os, random, shutil, struct, subprocess

from dbi import run

DIR = os.path.join(os.environ.get("REWIRE_BENCH_DIR", "/tmp/rewire-bench"), "cov-merge")
LS_RUNS = [["ls"], ["ls", "-la", "/usr/bin"], ["ls", "-R", "/etc"], ["ls", "--color=always", "-l", "/"], ["ls", "-lhS", "/usr/lib"]]


def parse(data):
    """A drcov file: (header bytes up to the BB table line, module paths by id, records)."""
    marker = data.index(b"BB Table: ")
    end = data.index(b"\n", marker) + 1
    n = int(data[marker + 10 : end].split()[0])
    header = data[:marker]
    lines = header.decode().splitlines()
    cols = [c.strip() for c in lines[3][len("Columns: ") :].split(",")]
    paths = {}
    for line in lines[4:]:
        fields = [f.strip() for f in line.split(",", len(cols) - 1)]
        paths[int(fields[0])] = fields[-1]
    records = [data[end + 8 * i : end + 8 * i + 8] for i in range(n)]
    return header, paths, records


def record_runs(rewire):
    runs_dir = os.path.join(DIR, "runs")
    shutil.rmtree(runs_dir, ignore_errors=True)
    os.makedirs(runs_dir)
    for argv in LS_RUNS:
        subprocess.run([rewire, "run", "-t", "cov", "-o", runs_dir, "--", *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return [parse(open(os.path.join(runs_dir, f), "rb").read()) for f in sorted(os.listdir(runs_dir))]


def generate(runs, n, lcov_n):
    drcov_dir, lcov_dir = os.path.join(DIR, "drcov"), os.path.join(DIR, "lcov")
    for d in (drcov_dir, lcov_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    rng = random.Random(17)
    total = 0
    for i in range(n):
        header, paths, records = runs[i % len(runs)]
        kept = [r for r in records if rng.random() >= 0.1]
        data = header + b"BB Table: %d bbs\n" % len(kept) + b"".join(kept)
        total += len(data)
        with open(os.path.join(drcov_dir, f"drcov.ls.{i:05}.0000.proc.log"), "wb") as f:
            f.write(data)
        if i < lcov_n:
            per_module = {}
            for r in kept:
                start, _size, mod = struct.unpack("<IHH", r)
                per_module.setdefault(paths[mod], set()).add(start)
            with open(os.path.join(lcov_dir, f"{i:05}.info"), "w") as f:
                f.write("TN:\n")
                for path, starts in sorted(per_module.items()):
                    f.write(f"SF:{path}\n")
                    f.writelines(f"DA:{s},1\n" for s in sorted(starts))
                    f.write(f"LF:{len(starts)}\nLH:{len(starts)}\nend_of_record\n")
    return drcov_dir, lcov_dir, total


def measure(argv):
    """Wall seconds and peak RSS (MiB) of argv, which must succeed."""
    secs, rss, _, status = run(argv)
    if status != 0:
        raise SystemExit(f"bench: {argv[0]} failed (wait status {status})")
    return secs, rss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--lcov-files", default="100,1000")
    ap.add_argument("--rewire", default=shutil.which("rewire") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "../target/release/rewire"))
    args = ap.parse_args()
    lcov_sizes = sorted(int(x) for x in args.lcov_files.split(",") if x)
    runs = record_runs(args.rewire)
    drcov_dir, lcov_dir, size = generate(runs, args.n, max(lcov_sizes, default=0))
    blocks = [len(r[2]) for r in runs]
    print(f"{args.n} drcov files of ls ({min(blocks)}-{max(blocks)} blocks per run, {size / 1e6:.0f} MB)")
    secs, rss = measure([args.rewire, "cov", "report", drcov_dir])
    print(f"rewire cov report: {secs:8.2f} s  peak RSS {rss:7.1f} MiB  ({args.n} files)")
    last = None
    for k in lcov_sizes:
        files = [os.path.join(lcov_dir, f) for f in sorted(os.listdir(lcov_dir))[:k]]
        argv = ["lcov", "-q", "-o", os.path.join(DIR, "merged.info")]
        for f in files:
            argv += ["-a", f]
        secs, rss = measure(argv)
        print(f"lcov -a:           {secs:8.2f} s  peak RSS {rss:7.1f} MiB  ({k} files)")
        last = (k, secs)
    if last and last[0] < args.n:
        print(f"lcov -a:           {last[1] * args.n / last[0]:8.2f} s  extrapolated linearly to {args.n} files from {last[0]}")


if __name__ == "__main__":
    main()
