#!/usr/bin/env python3
"""rewire's engine benchmark: real workloads natively and under `rewire run`, side by side.

usage: bench/dbi.py [-n RUNS] [-w NAME,NAME] [--rewire PATH] [--tools] [-- EXTRA RUN OPTIONS]

Builds its inputs once under $REWIRE_BENCH_DIR (default /tmp/rewire-bench), then for every
workload alternates native and rewire runs (so machine drift hits both alike) and prints the
median wall time natively, the median ratio rewire/native, rewire's peak RSS against native,
and whether stdout and exit status matched. The last lines are the geometric means of the
ratios. With --tools, the built-in tools run side by side too: -t cov, -t inscount and
-t cov --hitcount (coverage files go to a scratch directory under the bench directory).
"""
import argparse, hashlib, math, os, random, shutil, statistics, subprocess, time

DIR = os.environ.get("REWIRE_BENCH_DIR", "/tmp/rewire-bench")
PY = "/usr/bin/python3.11"
PY_WORK = """
def fib(n): return n if n < 2 else fib(n - 1) + fib(n - 2)
table = {}
for i in range(400000): table[i % 7919] = table.get(i % 7919, 0) + i
words = sorted(str(i * 7 % 1000) for i in range(200000))
print(fib(25), sum(table.values()), words[:3])
"""


def prepare():
    os.makedirs(DIR, exist_ok=True)
    text = os.path.join(DIR, "words.txt")
    if not os.path.exists(text):
        rng = random.Random(3)
        vocab = ["".join(rng.choice("etaoinshrdlucmfwyp") for _ in range(rng.randint(2, 9))) for _ in range(4000)]
        with open(text, "w") as f:
            for _ in range(300000):
                f.write(" ".join(rng.choice(vocab) for _ in range(rng.randint(2, 11))) + "\n")
    src = os.path.join(DIR, "gen.i")
    if not os.path.exists(src):
        rng = random.Random(5)
        fns = []
        for i in range(400):
            cases = " ".join(f"case {c}: a += {rng.randint(1, 99)} * k; break;" for c in range(6))
            call = f"a += g{i - 1}(a & 15);" if i else ""
            fns.append(f"static long g{i}(long n) {{ long a = {i}; for (long k = 0; k < n; k++) {{ switch (k % 7) {{ {cases} default: {call} }} }} return a; }}")
        fns.append("int main(int c, char **v) { return (int)g399(c); }")
        with open(src, "w") as f:
            f.write("\n".join(fns))
    script = os.path.join(DIR, "work.py")
    with open(script, "w") as f:
        f.write(PY_WORK)
    cc1 = subprocess.check_output(["gcc", "-print-prog-name=cc1"], text=True).strip()
    return {
        "gzip": f"gzip -6 -c {text}",
        "bzip2": f"bzip2 -9 -c {text}",
        "xz": f"xz -2 -T1 -c {text}",
        "sha256sum": f"sha256sum {text} {text} {text}",
        "sort": f"sort -S 300M {text}",
        "sort-mt": f"sort --parallel=2 -S 300M {text}",
        "python": f"{PY} {script}",
        "cc1": f"{cc1} -fpreprocessed -quiet -O1 -o /dev/null {src}",
        "startup": "ls -la /usr/bin",
    }


# A child forked from this script starts with the script's peak RSS as its own (Linux carries
# the high-water mark across fork and exec), so the programs run under this small helper,
# which forks them from itself and reports their wait4 peak RSS (KiB) and status to a file.
PEAK_RSS_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    pid_t pid = fork();
    if (pid == 0) { execvp(argv[2], argv + 2); perror(argv[2]); _exit(127); }
    int status; struct rusage ru;
    if (pid < 0 || wait4(pid, &status, 0, &ru) < 0) return 1;
    FILE *f = fopen(argv[1], "w");
    if (!f) return 1;
    fprintf(f, "%ld %d\n", ru.ru_maxrss, status);
    return fclose(f) != 0;
}
"""


def peak_rss_helper():
    """The helper's path, built once under DIR."""
    os.makedirs(DIR, exist_ok=True)
    exe = os.path.join(DIR, "peak-rss")
    if not os.path.exists(exe):
        src = exe + ".c"
        with open(src, "w") as f:
            f.write(PEAK_RSS_C)
        subprocess.check_call(["gcc", "-O2", "-o", exe, src])
    return exe


def run(argv, stdout=None):
    """Runs argv: (wall seconds, the program's peak RSS in MiB, sha256 of its stdout, wait status)."""
    report = os.path.join(DIR, f"peak-rss.{os.getpid()}.txt")
    start = time.perf_counter()
    p = subprocess.Popen([peak_rss_helper(), report, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=DIR)
    digest = hashlib.sha256()
    for chunk in iter(lambda: p.stdout.read(1 << 16), b""):
        digest.update(chunk)
    if p.wait() != 0:
        raise SystemExit(f"bench: cannot run {argv}")
    elapsed = time.perf_counter() - start
    with open(report) as f:
        rss_kib, status = map(int, f.read().split())
    return elapsed, rss_kib / 1024, digest.hexdigest(), status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3)
    ap.add_argument("-w", default="")
    ap.add_argument("--rewire", default=shutil.which("rewire") or os.path.join(os.path.dirname(__file__), "../target/release/rewire"))
    ap.add_argument("--no-baseline", action="store_true", help="skip the column without traces")
    ap.add_argument("--tools", action="store_true", help="add columns for -t cov, -t inscount, -t cov --hitcount")
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    workloads = prepare()
    names = a.w.split(",") if a.w else list(workloads)
    unknown = [n for n in names if n not in workloads]
    if unknown:
        raise SystemExit(f"bench: no workload named {', '.join(unknown)} (there are {', '.join(workloads)})")
    variants = [("traces", [a.rewire, "run", *a.extra, "--"])]
    if not a.no_baseline:
        variants.append(("no traces", [a.rewire, "run", "--no-traces", *a.extra, "--"]))
    if a.tools:
        cov_dir = os.path.join(DIR, "coverage")
        os.makedirs(cov_dir, exist_ok=True)
        variants += [
            ("cov", [a.rewire, "run", "-t", "cov", "-o", cov_dir, *a.extra, "--"]),
            ("inscount", [a.rewire, "run", "-t", "inscount", *a.extra, "--"]),
            ("hitcount", [a.rewire, "run", "-t", "cov", "--hitcount", "-o", cov_dir, *a.extra, "--"]),
        ]
    print(f"{'workload':10} {'native s':>9} {'native MiB':>10} " + " ".join(f"{v + ' ratio':>16} {'MiB':>6} same" for v, _ in variants))
    ratios = {v: [] for v, _ in variants}
    for name in names:
        argv = workloads[name].split()
        nat, runs = [], {v: [] for v, _ in variants}
        for _ in range(a.n):
            nat.append(run(argv))
            for v, prefix in variants:
                runs[v].append(run(prefix + argv))
            if a.tools:
                shutil.rmtree(cov_dir, ignore_errors=True)
                os.makedirs(cov_dir)
        cells = []
        for v, _ in variants:
            rew = runs[v]
            same = all(r[2] == nat[0][2] and r[3] == nat[0][3] for r in rew)
            ratio = statistics.median(r[0] / n[0] for n, r in zip(nat, rew))
            if same:
                ratios[v].append(ratio)
            cells.append(f"{ratio:16.2f} {max(r[1] for r in rew):6.0f} {'yes ' if same else 'NO  '}")
        print(f"{name:10} {statistics.median(n[0] for n in nat):9.3f} {max(n[1] for n in nat):10.0f} " + " ".join(cells), flush=True)
    for v, _ in variants:
        r = ratios[v]
        geo = math.exp(sum(map(math.log, r)) / len(r)) if r else float("nan")
        print(f"{v}: geometric mean ratio {geo:.3f} over {len(r)} matching workloads of {len(names)}")


if __name__ == "__main__":
    main()
