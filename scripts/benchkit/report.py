"""The results: a description of the machine, the Markdown tables, the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

from benchkit.peers import LABELS

if TYPE_CHECKING:
    from pathlib import Path

    from benchkit.core import Row


def machine(root: Path, relay_src: Path | None = None) -> dict[str, Any]:
    """What the figures were taken on, and which Relay (the checkout's commit, or that of
    `relay_src` when it is a git work tree; None when it is not)."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    node = shutil.which("node")
    src = relay_src or root
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _output([node, "--version"]) if node else None,
        "bench_commit": _output(["git", "-C", str(root), "rev-parse", "--short", "HEAD"]),
        "relay_commit": _output(["git", "-C", str(src), "rev-parse", "--short", "HEAD"]),
        "relay_tree_dirty": bool(_output(["git", "-C", str(src), "status", "--porcelain"])),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _output(args: list[str]) -> str | None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# What a scenario's "Relay" column is, when it is not the obvious thing.
CAPTIONS = {
    "relay_ws": "Relay: the byte relay over `/v1/relay` WebSockets; Relay TCP: its TCP listener "
    "(scenario `relay`, same run). The asyncio relay speaks TCP only.",
}


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "1/s":
        return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def markdown(result: dict[str, Any], rows: list[Row]) -> str:
    servers: list[str] = result["servers"]
    m = result["machine"]
    lines = [
        f"Relay bench, {result['profile']} profile, {result['date']}: {m['cpu_model']}, "
        f"{m['cores']} cores, {m['memory_gb']} GB, Python {m['python']}, Node {m['node']}; "
        f"load average at start {m['load_average_at_start']}, at end "
        f"{result['load_average_at_end']}.",
        "",
    ]
    for scenario in dict.fromkeys(r.scenario for r in rows):
        mine = [r for r in rows if r.scenario == scenario]
        # Servers of the run, then any a scenario adds itself (the byte relay's asyncio peer).
        keys = dict.fromkeys(k for r in mine for k in r.values)
        shown = [s for s in servers if s in keys] + [k for k in keys if k not in servers]
        others = [p for p in shown if p != "relay"]
        head = ["Case", "Metric", *(LABELS.get(s, s) for s in shown)]
        head += [f"Relay / {LABELS.get(p, p)}" for p in others] + ["Bar"]
        lines += [f"### {scenario}", ""]
        if scenario in CAPTIONS:
            lines += [CAPTIONS[scenario], ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        for r in mine:
            cells = [r.case, f"{r.metric} ({r.unit})" if r.unit else r.metric]
            cells += [_figure(r.values.get(s), r.unit) for s in shown]
            for p in others:
                ratio = r.ratio(p)
                cells.append("n/a" if ratio is None else f"{ratio:.2f}×")  # noqa: RUF001
            bar = r.bar or ""
            if r.bar and r.bar_met is not None:
                bar += " ✅" if r.bar_met else " ❌"
            cells.append(bar)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    phases = result["phases"]
    if phases:
        lines += [
            "### CPU during each measured window",
            "",
            "| Scenario | Server | Sessions | Phase | Server CPU % | Server preempted/s "
            "| Load generator CPU % (processes) | Deliveries/s | Posts acked/s "
            "| Missing deliveries |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in phases:
            acked = p.get("acked_per_s")
            lines.append(
                f"| {p['scenario']} | {LABELS.get(p['server'], p['server'])} | "
                f"{p.get('sessions', '')} | {p['phase']} | {p['server_cpu_pct']} | "
                f"{p.get('server_preempted_per_s', '')} | "
                f"{p['lg_cpu_pct']} ({p['lg_processes']}) | "
                f"{_figure(p['deliveries_per_s'], '1/s') if p['deliveries_total'] else ''} | "
                f"{'' if acked is None else _figure(acked, '1/s')} | "
                f"{p['missing_deliveries']} |"
            )
        lines.append("")
    for note in result["notes"]:
        lines.append(f"- {note}")
    return "\n".join(lines).rstrip() + "\n"


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
