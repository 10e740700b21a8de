#!/usr/bin/env python3
"""Helpers for scripts/bench (standard library only).

Subcommands:
  floors DIR [--seconds S] [--reps R]
      Machine floors, measured in DIR (the file system the queues live on):
      spawn+wait of /bin/true per second (1 and 2 processes in parallel),
      rename(2) per second, and write+fsync+rename+fsync(dir) per second.
      Prints one TSV line per floor: name, median, low, high, reps (rates, 1/s).
  stats [--hyperfine FILE]
      Median and spread of numbers (one per line on stdin, or the "times" of a
      hyperfine --export-json file). Prints "median low high n kind": low/high
      are min/max below 10 samples and p10/p90 from 10 samples on.
  rss [--interval S] [--out FILE] -- CMD...
      Run CMD, sample VmHWM (peak RSS) of CMD and every descendant every S
      seconds, and write JSON: {"exit":..., "by_name": {comm: {"max_kb":...,
      "pids":...}}}. Exits with CMD's status.
  render RESULTS META [--md FILE] [--write]
      Turn the TSV results and the metadata file of a run into the markdown
      block (table, targets, commands), print it, and with --write replace the
      text between the bench markers of FILE.
"""

import json
import os
import statistics
import sys
import time

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"


# ---------------------------------------------------------------- floors

def _spawn_loop(seconds):
    env = dict(os.environ)
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        pid = os.posix_spawn("/bin/true", ["true"], env)
        os.waitpid(pid, 0)
        n += 1
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def _spawn_parallel(seconds, procs):
    if procs == 1:
        return _spawn_loop(seconds)
    pipes = []
    pids = []
    for _ in range(procs):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            rate = _spawn_loop(seconds)
            os.write(w, repr(rate).encode())
            os._exit(0)
        os.close(w)
        pipes.append(r)
        pids.append(pid)
    total = 0.0
    for r, pid in zip(pipes, pids):
        data = b""
        while True:
            chunk = os.read(r, 64)
            if not chunk:
                break
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        total += float(data)
    return total


def _rename_loop(d, seconds):
    a = os.path.join(d, "a")
    b = os.path.join(d, "b")
    with open(a, "w") as f:
        f.write("x")
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        os.rename(a, b)
        os.rename(b, a)
        n += 2
        now = time.perf_counter()
        if now >= end:
            os.unlink(a)
            return n / (now - start)


def _durable_loop(d, seconds):
    sub = os.path.join(d, "durable")
    os.mkdir(sub)
    dfd = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
    data = b'{"cmd":["true"],"state":"pending"}\n' * 4
    n = 0
    start = time.perf_counter()
    end = start + seconds
    try:
        while True:
            tmp = os.path.join(sub, ".tmp.%d" % n)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, os.path.join(sub, "job.%d" % n))
            os.fsync(dfd)
            n += 1
            now = time.perf_counter()
            if now >= end:
                return n / (now - start)
    finally:
        os.close(dfd)
        for name in os.listdir(sub):
            os.unlink(os.path.join(sub, name))
        os.rmdir(sub)


def cmd_floors(args):
    seconds = 1.0
    reps = 3
    d = None
    it = iter(args)
    for a in it:
        if a == "--seconds":
            seconds = float(next(it))
        elif a == "--reps":
            reps = int(next(it))
        else:
            d = a
    if d is None or not os.path.isdir(d):
        sys.exit("bench-floor.py floors: need an existing directory")
    probes = [
        ("spawn1", lambda: _spawn_parallel(seconds, 1)),
        ("spawn2", lambda: _spawn_parallel(seconds, 2)),
        ("rename", lambda: _rename_loop(d, seconds)),
        ("fsync", lambda: _durable_loop(d, seconds)),
    ]
    for name, fn in probes:
        vals = [fn() for _ in range(reps)]
        print("%s\t%.6g\t%.6g\t%.6g\t%d" % (
            name, statistics.median(vals), min(vals), max(vals), len(vals)))
        sys.stdout.flush()


# ---------------------------------------------------------------- stats

def summarize(vals):
    vals = sorted(vals)
    n = len(vals)
    med = statistics.median(vals)
    if n >= 10:
        qs = statistics.quantiles(vals, n=10, method="inclusive")
        return med, qs[0], qs[-1], n, "p10-p90"
    return med, vals[0], vals[-1], n, "min-max"


def cmd_stats(args):
    if args[:1] == ["--hyperfine"]:
        with open(args[1]) as f:
            vals = json.load(f)["results"][0]["times"]
    else:
        vals = [float(x) for x in sys.stdin.read().split()]
    if not vals:
        sys.exit("bench-floor.py stats: no numbers")
    med, lo, hi, n, kind = summarize(vals)
    print("%.9g %.9g %.9g %d %s" % (med, lo, hi, n, kind))


# ---------------------------------------------------------------- rss

def _children(pid):
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def _status(pid):
    name = None
    hwm = None
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        return None, None
    return name, hwm


def cmd_rss(args):
    interval = 0.01
    out = None
    while args and args[0] != "--":
        if args[0] == "--interval":
            interval = float(args[1])
            args = args[2:]
        elif args[0] == "--out":
            out = args[1]
            args = args[2:]
        else:
            sys.exit("bench-floor.py rss: unknown option %s" % args[0])
    cmd = args[1:]
    if not cmd:
        sys.exit("bench-floor.py rss: no command")
    pid = os.posix_spawnp(cmd[0], cmd, dict(os.environ))
    peaks = {}  # pid -> (name, max_kb)
    status = None
    while True:
        stack = [pid]
        while stack:
            p = stack.pop()
            name, hwm = _status(p)
            if hwm is not None:
                old = peaks.get(p)
                if old is None or hwm > old[1]:
                    peaks[p] = (name, hwm)
            stack.extend(_children(p))
        done, st = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            status = st
            break
        time.sleep(interval)
    by_name = {}
    for name, kb in peaks.values():
        e = by_name.setdefault(name, {"max_kb": 0, "pids": 0})
        e["max_kb"] = max(e["max_kb"], kb)
        e["pids"] += 1
    code = os.waitstatus_to_exitcode(status)
    res = {"exit": code, "by_name": by_name}
    text = json.dumps(res, sort_keys=True)
    if out:
        with open(out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    sys.exit(code if 0 <= code < 256 else 1)


# ---------------------------------------------------------------- render

COLUMNS = ["id", "group", "system", "kind", "jobs", "n", "median", "lo",
           "hi", "spread", "metric", "ref", "command", "note"]


def load_results(path):
    rows = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            parts = line.split("\t")
            parts += [""] * (len(COLUMNS) - len(parts))
            r = dict(zip(COLUMNS, parts))
            for k in ("median", "lo", "hi", "jobs"):
                try:
                    r[k] = float(r[k]) if r[k] != "" else None
                except ValueError:
                    r[k] = None
            rows.append(r)
    return rows


def speed(r):
    """Work per second; higher is better. None when not measured."""
    if r is None or r["median"] is None:
        return None
    m = r["metric"]
    if m == "rate":
        return r["median"]
    if m == "latency":
        return 1.0 / r["median"] if r["median"] > 0 else None
    if m == "elapsed":
        return r["jobs"] / r["median"] if r["median"] > 0 else None
    return None


def fmt_time(s):
    if s is None:
        return ""
    if s < 1e-3:
        return "%.0f µs" % (s * 1e6)
    if s < 1.0:
        return "%.3g ms" % (s * 1e3)
    return "%.3g s" % s


def fmt_num(x):
    if x is None:
        return ""
    if x >= 100:
        return "{:,.0f}".format(x)
    if x >= 10:
        return "%.1f" % x
    return "%.2f" % x


def fmt_kb(kb):
    if kb is None:
        return ""
    return "%.1f MiB" % (kb / 1024.0)


def cells(r):
    """median, spread, rate cells of one row."""
    med, spread, rate = _cells(r)
    if r["n"] in ("1", "0", ""):
        spread = "—"
    return med, spread, rate


def _cells(r):
    m = r["metric"]
    if r["median"] is None:
        return "", "", ""
    if m == "latency":
        return (fmt_time(r["median"]),
                "%s–%s" % (fmt_time(r["lo"]), fmt_time(r["hi"])),
                "%s /s" % fmt_num(speed(r)))
    if m == "elapsed":
        per = r["median"] / r["jobs"] if r["jobs"] else None
        return (fmt_time(r["median"]),
                "%s–%s" % (fmt_time(r["lo"]), fmt_time(r["hi"])),
                "%s jobs/s (%s/job)" % (fmt_num(speed(r)), fmt_time(per)))
    if m == "rate":
        return ("%s /s" % fmt_num(r["median"]),
                "%s–%s" % (fmt_num(r["lo"]), fmt_num(r["hi"])), "")
    if m == "rss":
        return (fmt_kb(r["median"]),
                "%s–%s" % (fmt_kb(r["lo"]), fmt_kb(r["hi"])), "")
    return str(r["median"]), "", ""


def md_escape(s):
    return s.replace("|", "\\|")


ORDER = ["floor", "w1", "w2", "w3", "w4", "w5", "w6", "w7"]


def order_key(r):
    head = r["id"].split(".", 1)[0]
    pos = ORDER.index(head) if head in ORDER else len(ORDER)
    # within a workload, q's own rows first (the listing peers ran earlier)
    return (pos, 1 if r["id"].startswith("w5.list.") else 0)


def render(results, meta):
    rows = sorted(load_results(results), key=order_key)
    by_id = {r["id"]: r for r in rows}
    metad = {}
    with open(meta) as f:
        for line in f:
            if "\t" in line:
                k, v = line.rstrip("\n").split("\t", 1)
                metad[k] = v
    out = []
    out.append("Generated by `scripts/bench%s` on %s." % (
        metad.get("args", ""), metad.get("date", "?")))
    out.append("")
    for k, label in (("machine", "machine"), ("load", "load"),
                     ("scratch", "scratch"), ("q", "q"), ("peers", "peers"),
                     ("mode", "sizes")):
        if k in metad:
            out.append("- %s: %s" % (label, metad[k]))
    out.append("")
    out.append("Spread is min–max over repetitions below 10 samples, p10–p90 "
               "from 10 samples on (column n). q/peer compares speeds "
               "(jobs or operations per second): above 1 means q is faster "
               "than that peer; it is computed against the group's first q row.")
    out.append("")
    out.append("| group | system | jobs | n | median | spread | rate | q/peer | command |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        med, spread, rate = cells(r)
        ratio = ""
        if r["kind"] != "q" and r["ref"]:
            qs = speed(by_id.get(r["ref"]))
            ps = speed(r)
            if qs and ps:
                ratio = "%.2f×" % (qs / ps)
        note = r["note"]
        if r["median"] is None:
            # "n/a (why)" / "failed: why": the verdict in the median column,
            # the reason beside the command
            if note.startswith("failed"):
                med, note = "failed", note[len("failed"):].lstrip(": ")
            else:
                med = "n/a"
                if note.startswith("n/a (") and note.endswith(")"):
                    note = note[len("n/a ("):-1]
                elif note.startswith("n/a"):
                    note = note[len("n/a"):].lstrip(" :")
            spread = rate = ""
        cmd = "`%s`" % md_escape(r["command"]) if r["command"] else ""
        if note:
            cmd = (cmd + " — " if cmd else "") + md_escape(note)
        jobs = "%d" % r["jobs"] if r["jobs"] is not None else ""
        out.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            md_escape(r["group"]), md_escape(r["system"]), jobs, r["n"],
            md_escape(med), spread, rate, ratio, cmd))
    out.append("")
    out.append("### Targets")
    out.append("")
    out.append("| target | measured | verdict |")
    out.append("|---|---|---|")
    for t in targets(rows, by_id, metad):
        out.append("| %s | %s | %s |" % tuple(md_escape(x) for x in t))
    out.append("")
    if metad.get("env"):
        out.append("Placeholders in the commands: %s" % metad["env"])
        out.append("")
    return "\n".join(out)


def targets(rows, by_id, meta):
    res = []

    def ok(cond):
        return "**met**" if cond else "**missed**"

    def na(r):
        return (r["note"] or "n/a") if r is not None else "not run"

    # end to end, default durability, 2 workers, >= 2x fastest persistent peer
    sizes = sorted({int(r["jobs"]) for r in rows
                    if r["id"].startswith("w3.") and r["id"].endswith(".j2.q")
                    and r["jobs"]})
    for s in sizes:
        q = by_id.get("w3.%d.j2.q" % s)
        peers = [r for r in rows if r["id"].startswith("w3.") and
                 r["kind"] == "persistent" and r["ref"] == "w3.%d.j2.q" % s and
                 speed(r)]
        name = "end to end %d jobs, 2 workers, default durability ≥ 2× fastest persistent peer" % s
        if not speed(q):
            res.append((name, na(q), "n/a"))
        elif not peers:
            res.append((name, "no persistent peer measured", "n/a"))
        else:
            best = max(peers, key=speed)
            ratio = speed(q) / speed(best)
            res.append((name, "q %s jobs/s vs %s %s jobs/s = %.2f×" % (
                fmt_num(speed(q)), best["system"], fmt_num(speed(best)), ratio),
                ok(ratio >= 2.0)))
    for s in sizes:
        q = by_id.get("w3.%d.j2.q-relaxed" % s)
        x = by_id.get("w3.%d.j2.xargs" % s)
        name = "end to end %d jobs, 2 workers, relaxed ≥ 70%% of `xargs -P2 -n1 true`" % s
        if not speed(q) or not speed(x):
            res.append((name, na(q) if not speed(q) else na(x), "n/a"))
        else:
            ratio = speed(q) / speed(x)
            res.append((name, "q %s jobs/s vs xargs %s jobs/s = %.0f%%" % (
                fmt_num(speed(q)), fmt_num(speed(x)), ratio * 100),
                ok(ratio >= 0.7)))
    # batch enqueue
    q = by_id.get("w2.q")
    name = "batch enqueue ≥ 20,000 jobs/s and ≥ 10× fastest peer"
    peers = [r for r in rows if r["id"].startswith("w2.") and r["kind"] != "q"
             and speed(r)]
    if not speed(q):
        res.append((name, na(q), "n/a"))
    else:
        txt = "q %s jobs/s" % fmt_num(speed(q))
        cond = speed(q) >= 20000
        if peers:
            best = max(peers, key=speed)
            ratio = speed(q) / speed(best)
            txt += "; fastest peer %s %s jobs/s = %.0f×" % (
                best["system"], fmt_num(speed(best)), ratio)
            cond = cond and ratio >= 10
        else:
            txt += "; no peer measured"
        res.append((name, txt, ok(cond)))
    # claim cost: one-shot q-claim (latency per claim) and a long-lived
    # q-run worker (time for its batch of ready jobs)
    for prefix, who, unit in (("w4.", "one-shot q-claim", "claim"),
                              ("w4w.", "q-run worker", "worker run")):
        c1 = by_id.get(prefix + "1000.q")
        cm = by_id.get(prefix + "1000000.q")
        name = "claim at 1M pending ≤ 2× claim at 1k (%s)" % who
        if c1 is None and cm is None:
            continue
        if cm is None or cm["median"] is None:
            extra = ""
            big = [r for r in rows if r["id"].startswith(prefix) and r["median"]]
            if big and c1 is not None and c1["median"]:
                top = max(big, key=lambda r: int(r["id"].split(".")[1]))
                if top is not c1:
                    extra = "; largest measured: %s pending = %.2f× the 1k %s" % (
                        top["id"].split(".")[1], top["median"] / c1["median"], unit)
            why = na(cm) if cm is not None else "1M not run (BENCH_FULL=1 runs it)"
            res.append((name, why + extra, "n/a"))
        elif c1 is None or c1["median"] is None:
            res.append((name, na(c1), "n/a"))
        else:
            ratio = cm["median"] / c1["median"]
            res.append((name, "%s vs %s = %.2f×" % (
                fmt_time(cm["median"]), fmt_time(c1["median"]), ratio), ok(ratio <= 2.0)))
    # listing
    lc = [r for r in rows if r["id"].startswith("w5.counts.") and r["kind"] == "q"]
    lc = max(lc, key=lambda r: r["jobs"] or 0) if lc else None
    name = "`q-ls --counts` at 100k jobs ≤ 200 ms"
    if lc is None or lc["median"] is None:
        res.append((name, na(lc), "n/a"))
    elif (lc["jobs"] or 0) < 100000:
        res.append((name, "%s at %d jobs (100k not run in this mode)" % (
            fmt_time(lc["median"]), lc["jobs"]), "n/a"))
    else:
        res.append((name, fmt_time(lc["median"]), ok(lc["median"] <= 0.2)))
    # memory
    runs = [by_id[k] for k in ("w6.q-run", "w6.q-run-sup")
            if k in by_id and by_id[k]["median"] is not None]
    for key, label in (("w6.q-supervise", "q-supervise"), ("w6.q-run", "q-run")):
        r = by_id.get(key)
        if key == "w6.q-run" and runs:
            r = max(runs, key=lambda x: x["median"])
        name = "peak RSS of %s ≤ 10 MiB" % label
        if r is None or r["median"] is None:
            res.append((name, na(r), "n/a"))
        else:
            res.append((name, fmt_kb(r["median"]), ok(r["median"] <= 10240)))
    # push latency
    q = by_id.get("w1.q")
    nq = by_id.get("w1.nq")
    name = "single `q-push` latency no worse than `nq`"
    if not speed(q) or not speed(nq):
        res.append((name, na(q) if not speed(q) else na(nq), "n/a"))
    else:
        res.append((name, "median q %s vs nq %s" % (
            fmt_time(q["median"]), fmt_time(nq["median"])),
            ok(q["median"] <= nq["median"])))
    # PostgreSQL (workload 7)
    e2e, floor = by_id.get("w7.e2e.q"), by_id.get("w7.floor.pgbench")
    if e2e is not None:
        name = "PostgreSQL end to end, 4 workers, synchronous_commit=on ≥ 800 jobs/s (goal 1,000)"
        if not speed(e2e):
            res.append((name, na(e2e), "n/a"))
        else:
            res.append((name, "%s jobs/s at %d jobs" % (fmt_num(speed(e2e)), e2e["jobs"]), ok(speed(e2e) >= 800)))
        name = "PostgreSQL claim → touch → settle ≥ 50% of the pgbench script of q's statements"
        if not speed(e2e) or not speed(floor):
            res.append((name, na(floor) if speed(e2e) else na(e2e), "n/a"))
        else:
            ratio = speed(e2e) / speed(floor)
            res.append((name, "q %s jobs/s vs pgbench %s = %.0f%%" % (
                fmt_num(speed(e2e)), fmt_num(speed(floor)), ratio * 100), ok(ratio >= 0.5)))
    gw = by_id.get("w7.e2e.graphile-worker")
    if e2e is not None and gw is not None:
        name = "PostgreSQL end to end: q ahead of graphile-worker on the same server"
        if not speed(e2e) or not speed(gw):
            res.append((name, na(gw) if speed(e2e) else na(e2e), "n/a"))
        else:
            ratio = speed(e2e) / speed(gw)
            res.append((name, "q %s jobs/s vs graphile-worker %s = %.2f×" % (
                fmt_num(speed(e2e)), fmt_num(speed(gw)), ratio), ok(ratio > 1.0)))
    # Measured inside a long-lived worker (the terms); the pgbench
    # row of the same statement stays beside it as a cross-check.
    c = by_id.get("w7.wclaim.q") or by_id.get("w7.claim.q")
    if c is not None:
        name = "PostgreSQL claim latency p99 < 20 ms with 100,000 pending, inside a worker"
        if c["median"] is None:
            res.append((name, na(c), "n/a"))
        else:
            res.append((name, "p99 %s (%s)" % (fmt_time(c["median"]), c["system"]), ok(c["median"] < 0.02)))
    p = by_id.get("w7.push.q")
    if p is not None:
        name = "PostgreSQL batch push ≥ 10,000 jobs/s"
        if not speed(p):
            res.append((name, na(p), "n/a"))
        else:
            res.append((name, "%s jobs/s" % fmt_num(speed(p)), ok(speed(p) >= 10000)))
    return res


def cmd_render(args):
    write = "--write" in args
    args = [a for a in args if a != "--write"]
    md = None
    if "--md" in args:
        i = args.index("--md")
        md = args[i + 1]
        del args[i:i + 2]
    results, meta = args[0], args[1]
    block = render(results, meta)
    print(block)
    if write and md:
        body = BEGIN + "\n" + block + "\n" + END
        try:
            with open(md) as f:
                text = f.read()
        except FileNotFoundError:
            text = "# Benchmarks\n\n"
        b = text.find(BEGIN)
        e = text.find(END)
        if b >= 0 and e > b:
            text = text[:b] + body + text[e + len(END):]
        else:
            text = text.rstrip("\n") + "\n\n## Results\n\n" + body + "\n"
        tmp = md + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, md)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sub, args = sys.argv[1], sys.argv[2:]
    if sub == "floors":
        cmd_floors(args)
    elif sub == "stats":
        cmd_stats(args)
    elif sub == "rss":
        cmd_rss(args)
    elif sub == "render":
        cmd_render(args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
