"""The results: machine facts, ``<timestamp>.json`` / ``.md`` and ``latest.json`` / ``.md``."""

from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psutil

#: Background CPU (percent of one core) above which the report warns of a noisy machine.
NOISY_PERCENT = 20.0


def _proc_value(path: str, key: str) -> str | None:
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine, and the software versions."""
    mem_kib = _proc_value("/proc/meminfo", "MemTotal") or "0 kB"
    packages = ["django", "djangorestframework", "gunicorn", "uvicorn", "uvloop", "redis"]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(int(mem_kib.split()[0]) / 1024 / 1024, 1),
        "cpu_model": _proc_value("/proc/cpuinfo", "model name") or platform.processor(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": versions,
    }


def code_version(root: Path) -> str:
    """The commit measured, with ``+ uncommitted changes`` when the tree differs from it
    outside bench/ (the harness itself is not the code under test)."""

    def git(*args: str) -> str:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench")
    return f"{commit} + uncommitted changes" if dirty else commit


def command_line() -> str:
    """How this run was started: ``./dev bench ...`` when the dev script started it."""
    args = shlex.join(sys.argv[1:])
    try:
        parent = psutil.Process().parent()
        parent_cmd = parent.cmdline() if parent else []
    except psutil.Error:
        parent_cmd = []
    if "devtools" in parent_cmd and "bench" in parent_cmd:
        return f"./dev bench {args}".strip()
    return f"python -m bench {args}".strip()


def _status(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[met]


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def markdown(data: dict[str, Any]) -> str:
    """The results table and the facts needed to read it."""
    m = data["machine"]
    lines = [
        f"# OpenPlatform benchmark — {data['started_at']}",
        "",
        f"`{data['command']}` ({data['profile']} run, {data['duration_seconds']:.0f} s) on "
        f"commit {data.get('code', 'unknown')}",
        "",
        "| Measurement | Result | Reference | Ratio | Goal | Status |",
        "|---|---|---|---|---|---|",
    ]
    for row in data["rows"]:
        ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            "| "
            + " | ".join(
                _cell(x)
                for x in (
                    row["measurement"],
                    row["result"],
                    row["reference"],
                    ratio,
                    row["goal"],
                    _status(row["met"]),
                )
            )
            + " |"
        )
    met = sum(1 for r in data["rows"] if r["met"] is True)
    goals = sum(1 for r in data["rows"] if r["met"] is not None)
    phases = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in data["phase_seconds"].items())
    lines += [
        "",
        f"Goals met: {met} of {goals}. Time taken: {phases}.",
        "",
        "**Machine:** "
        f"{m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}.  ",
        f"**Software:** Python {m['python']}, PostgreSQL {data['servers']['postgresql']}, "
        f"{data['servers']['redis']}, Django {m['packages']['django']}, gunicorn "
        f"{m['packages']['gunicorn']} + uvicorn {m['packages']['uvicorn']} (uvloop "
        f"{m['packages']['uvloop']}), redis-py {m['packages']['redis']}.  ",
        f"**Server:** gunicorn with {data['workers']} uvicorn workers "
        "(deploy/gunicorn.conf.py, production settings) on 127.0.0.1; load from one separate "
        "client process (asyncio + uvloop, raw HTTP/1.1 keep-alive).",
        "",
        "CPU use during each measurement (percent of one core; the machine has "
        f"{m['cores'] * 100} %):",
        "",
        "| Measurement | Client | Server workers | Redis | Other processes |",
        "|---|---|---|---|---|",
    ]
    busiest = 0.0
    for row in data["rows"]:
        for label, key in (("", "cpu"), (" — reference", "reference_cpu")):
            cpu = row["figures"].get(key)
            if cpu:
                server = f"{cpu['server']:.0f} %" if cpu.get("server") else "—"
                other = cpu.get("other", 0.0)
                busiest = max(busiest, other)
                lines.append(
                    f"| {_cell(row['measurement'])}{label} | {cpu['client']:.0f} % | "
                    f"{server} | {cpu.get('redis', 0):.0f} % | {other:.0f} % |"
                )
    lines.append("")
    lines += _fairness_phases(data.get("details", {}).get("fairness"))
    if busiest > NOISY_PERCENT:
        lines += [
            f"Note: other processes used up to {busiest:.0f} % of a core during a measurement; "
            "absolute figures of this run are lower than on a quiet machine (the ratios, "
            "measured side by side, suffer less).",
            "",
        ]
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def _fairness_phases(fairness: dict[str, Any] | None) -> list[str]:
    """The fairness measurement phase by phase, in the order they ran: each phase's
    bystander latencies, how late the bystanders' own process sent (its share of the
    latency), the workers' CPU and, under flood, what the flooding tenant got."""
    if not fairness or not fairness.get("order"):
        return []
    lines = [
        "Fairness, phase by phase (bystander latencies timed from each request's scheduled "
        "start; send lag: how late the bystanders' own process sent):",
        "",
        "| Phase | Publish p50 / p99 | Pull p50 / p99 | Send lag p99 | Server workers CPU | "
        "Flooder: accepted, 429 |",
        "|---|---|---|---|---|---|",
    ]
    taken = {"alone": 0, "flood": 0}
    for name in fairness["order"]:
        phase = fairness[name][taken[name]]
        taken[name] += 1
        pub, pull = phase["publish_latency"], phase["pull_latency"]
        flooder = "—"
        if name == "flood":
            f = phase["flood_publish"]
            flooder = f"{f['messages_per_s']:,.0f} msg/s, {f['rate_limited_per_s']:,.0f} /s"
        lines.append(
            f"| {'under flood' if name == 'flood' else 'alone'} | "
            f"{_ms(pub['p50_ms'])} / {_ms(pub['p99_ms'])} | "
            f"{_ms(pull['p50_ms'])} / {_ms(pull['p99_ms'])} | {_ms(phase['send_lag']['p99_ms'])} | "
            f"{phase['cpu'].get('server', 0):.0f} % | {flooder} |"
        )
    lines.append("")
    return lines


def write(out_dir: Path, stamp: str, data: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``<stamp>.json`` and ``<stamp>.md`` and copy them to ``latest.*``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stamp}.json"
    md_path = out_dir / f"{stamp}.md"
    json_path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    md_path.write_text(markdown(data))
    shutil.copyfile(json_path, out_dir / "latest.json")
    shutil.copyfile(md_path, out_dir / "latest.md")
    return json_path, md_path
