"""Startup time and idle memory of `nango up` (a benchmark that prints figures; not a test).

Measures, over --runs runs each:
- fresh: an empty data directory (embedded Postgres initdb, key generation, migrations);
- warm: the same data directory again (everything exists);
as seconds from process start to "is up" on stdout (all five services and the gateway healthy,
environments readable). Then, after --idle seconds of idleness, the resident memory (RSS, and
USS = memory unique to the process, PSS = resident memory with shared pages split between the
processes sharing them) of every service with its children, the launcher and the embedded Postgres.

    .venv/bin/python bench/startup.py [--runs 3] [--idle 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import free_port

BIN = Path(sys.executable).parent
SERVICES = ("server", "orchestrator", "jobs", "runner", "persist")


def start(data_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANGO_", "ORCHESTRATOR_", "RECORDS_", "JOBS_"))}
    env.update(
        NANGO_DATA_DIR=str(data_dir),
        NANGO_BIND_HOST="127.0.0.1",
        SERVER_PORT=str(free_port()),
        NANGO_SERVER_GRPC_PORT=str(free_port()),
        NANGO_JOBS_PORT=str(free_port()),
        NANGO_RUNNER_PORT=str(free_port()),
        NANGO_PERSIST_PORT=str(free_port()),
        NANGO_ORCHESTRATOR_PORT=str(free_port()),
    )
    began = time.perf_counter()
    with log.open("wb") as sink:
        process = subprocess.Popen([str(BIN / "nango"), "up"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if b"is up." in log.read_bytes():
            return process, time.perf_counter() - began
        if process.poll() is not None:
            raise SystemExit(f"nango up exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)
    process.kill()
    raise SystemExit("nango up was not healthy within 120 s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(60)


def memory(process: subprocess.Popen[bytes], pgdata: Path) -> dict[str, tuple[float, float, float]]:
    """Name -> (RSS, USS, PSS) in MiB, each service with its own children (the runner's zygote and
    templates). RSS counts a shared page in every process that maps it (Postgres's shared buffers in
    each backend, the zygote's heap in each fork); PSS splits it between them, so PSS sums to what the
    platform really holds."""
    found: dict[str, tuple[float, float, float]] = {}
    launcher = psutil.Process(process.pid)
    mib = 1024 * 1024

    def sample(family: list[psutil.Process]) -> tuple[float, float, float]:
        infos = [p.memory_full_info() for p in family]
        return (
            sum(i.rss for i in infos) / mib,
            sum(i.uss for i in infos) / mib,
            sum(i.pss for i in infos) / mib,
        )

    found["launcher (nango up)"] = sample([launcher])
    for child in launcher.children():
        cmdline = " ".join(child.cmdline())
        for name in SERVICES:
            if f"-m nango.{name}" in cmdline:
                found[name] = sample([child, *child.children(recursive=True)])
    postgres = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "postgres"]
    ours = [p for p in postgres if str(pgdata) in " ".join(p.info["cmdline"] or [])]
    if ours:
        found["embedded postgres (all backends)"] = sample([ours[0], *ours[0].children(recursive=True)])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds to stay idle before sampling memory")
    args = parser.parse_args()
    fresh: list[float] = []
    warm: list[float] = []
    samples: list[dict[str, tuple[float, float, float]]] = []
    with tempfile.TemporaryDirectory(prefix="nango-bench-") as tmp:
        for run in range(args.runs):
            data_dir = Path(tmp) / f"data-{run}"
            process, seconds = start(data_dir, Path(tmp) / f"fresh-{run}.log")
            fresh.append(seconds)
            stop(process)
            process, seconds = start(data_dir, Path(tmp) / f"warm-{run}.log")
            warm.append(seconds)
            time.sleep(args.idle)
            samples.append(memory(process, data_dir / "pgdata"))
            stop(process)

    def line(name: str, xs: list[float], unit: str) -> str:
        return (
            f"{name:<38} median {statistics.median(xs):7.2f} {unit}   min {min(xs):7.2f}   max {max(xs):7.2f}"
            f"   runs {[round(x, 2) for x in xs]}"
        )

    print(f"nango up, {args.runs} runs, machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    print(line("healthy from start, fresh data dir", fresh, "s"))
    print(line("healthy from start, warm data dir", warm, "s"))
    print(f"idle memory after {args.idle:.0f} s (median over runs), MiB (a service with its child processes):")
    totals = [0.0, 0.0, 0.0]
    for name in samples[0]:
        rss, uss, pss = (statistics.median(s[name][i] for s in samples if name in s) for i in range(3))
        print(f"  {name:<36} RSS {rss:7.1f}   USS {uss:7.1f}   PSS {pss:7.1f}")
        if name in SERVICES:
            totals = [totals[0] + rss, totals[1] + uss, totals[2] + pss]
    print(f"  {'sum of the five services':<36} RSS {totals[0]:7.1f}   USS {totals[1]:7.1f}   PSS {totals[2]:7.1f}")
    rss_all = statistics.median(sum(v[0] for v in s.values()) for s in samples)
    pss_all = statistics.median(sum(v[2] for v in s.values()) for s in samples)
    print(f"  {'everything (services+launcher+pg)':<36} RSS {rss_all:7.1f}                 PSS {pss_all:7.1f}")


if __name__ == "__main__":
    main()
