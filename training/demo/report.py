"""The demo's report: success with 95 % Wilson intervals, per-stage success, latency, times.

Wilson rather than the normal approximation because evaluation sets are small (2-50
episodes) and success rates sit near 0 or 1, where ``p +- 1.96 sqrt(p(1-p)/n)`` collapses
to a zero-width interval (Wilson 1927; Brown, Cai & DasGupta 2001 recommend it for n < 40).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from theia_ros.atomic import atomic_write

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(low, high)`` for ``successes`` out of ``n`` (``(0, 1)`` if n=0)."""
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, no rounding dust
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def rate_entry(successes: int, n: int) -> dict[str, float | int]:
    """``{"successes", "n", "rate", "ci95_low", "ci95_high"}``."""
    low, high = wilson_interval(successes, n)
    return {"successes": successes, "n": n, "rate": successes / n if n else float("nan"),
            "ci95_low": low, "ci95_high": high}


def _fmt_rate(e: Mapping[str, Any]) -> str:
    return (f"{e['successes']}/{e['n']} = {100 * e['rate']:.0f} % "
            f"(95 % CI {100 * e['ci95_low']:.0f}-{100 * e['ci95_high']:.0f} %)")


def _fmt_ms(p: Mapping[str, float | None]) -> str:
    if p.get("p50") is None:
        return "n/a"
    return f"p50 {p['p50']:.1f} ms, p90 {p['p90']:.1f} ms, p99 {p['p99']:.1f} ms"


def format_report(report: Mapping[str, Any]) -> str:
    """Human-readable report (what ``theia demo`` prints at the end)."""
    ev = report["evaluation"]
    lines = [
        "",
        "=" * 72,
        f"theia demo: {report['title']}",
        "=" * 72,
        f"encoder        {report['encoder']}",
        f"held-out       {ev['episodes']} episodes, seeds {ev['seeds'][0]}..{ev['seeds'][-1]} "
        f"(demos: seeds {report['demo_seeds']})",
        f"success        {_fmt_rate(ev['success'])}  [door fully open at the end]",
        f"  stage open        {_fmt_rate(ev['stages']['open'])}",
        f"  stage fully open  {_fmt_rate(ev['stages']['fully_open'])}",
    ]
    lat = ev["latency"]
    if ev["fast"]:
        lines.append("latency        not measured (--fast: no real-time loop)")
    else:
        lines += [
            f"control step   {_fmt_ms(lat['tick_ms'])}  (observe -> policy -> safety -> apply, "
            f"{ev['rate_hz']:g} Hz loop, {lat['overruns']} overruns)",
            f"image->command {_fmt_ms(lat['command_latency_ms'])}",
            f"policy call    {_fmt_ms(lat['policy_ms'])}  ({ev['backend']})",
        ]
    lines.append("wall time      " + ", ".join(
        f"{name} {s['wall_s']:.0f} s" + (" (skipped: done before)" if s["skipped"] else "")
        for name, s in report["stages"].items()) + f"; total {report['total_wall_s']:.0f} s")
    lines.append(f"dataset        {report['paths']['dataset']}")
    lines.append(f"policy         {report['paths']['policy']}")
    lines.append(f"bundle         {report['paths']['bundle']}")
    if report["paths"].get("video"):
        lines.append(f"rollout video  {report['paths']['video']}")
    lines.append(f"report         {report['paths']['report']}")
    if report["paths"].get("plot"):
        lines.append(f"plot           {report['paths']['plot']}")
    lines.append("=" * 72)
    return "\n".join(lines)


def plot_bars(ev: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Bars of the success panel: the stages reached, then success only where it differs.

    Success (fully open at the end) equals "reached fully open" unless a door swung back,
    so a third bar would mostly repeat the second; the panel title states success instead.
    """
    bars = [("reached open", ev["stages"]["open"]),
            ("reached fully open", ev["stages"]["fully_open"])]
    if ev["success"]["successes"] != ev["stages"]["fully_open"]["successes"]:
        bars.append(("fully open at the end\n(success)", ev["success"]))
    return bars


def bar_label(e: Mapping[str, Any]) -> str:
    """``7/10 = 70 %`` over ``CI 40-89 %`` (what is printed on a bar)."""
    return (f"{e['successes']}/{e['n']} = {100 * e['rate']:.0f} %\n"
            f"CI {100 * e['ci95_low']:.0f}-{100 * e['ci95_high']:.0f} %")


def write_plot(path: str | Path, report: Mapping[str, Any],
               tick_ms: list[float] | None = None) -> Path | None:
    """Stages reached with Wilson bars and their numbers, and the control-step histogram."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ev = report["evaluation"]
    entries = plot_bars(ev)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    rates = [100 * e["rate"] for _, e in entries]
    err = [[100 * (e["rate"] - e["ci95_low"]) for _, e in entries],
           [100 * (e["ci95_high"] - e["rate"]) for _, e in entries]]
    colours = ["#4c8c4a"] * 2 + ["#b5651d"] * (len(entries) - 2)
    ax.bar(range(len(entries)), rates, yerr=err, capsize=6, color=colours, width=0.6)
    for x, (_, e) in enumerate(entries):  # above the interval's cap, clear of the whisker
        ax.text(x, 100 * e["ci95_high"] + 2, bar_label(e), ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(range(len(entries)), [n for n, _ in entries])
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("% of held-out episodes")
    s = ev["success"]
    ax.set_title(f"n = {ev['episodes']} held-out, 95 % Wilson CI\nsuccess (fully open at the "
                 f"end) {s['successes']}/{s['n']} = {100 * s['rate']:.0f} %", fontsize=10)
    ax = axes[1]
    if tick_ms:
        tick_histogram(ax, tick_ms, 1e3 / ev["rate_hz"])
    else:
        ax.text(0.5, 0.5, "latency not measured (--fast)", ha="center", va="center")
        ax.set_axis_off()
    return save_figure(fig, path)


def tick_histogram(ax: Any, tick_ms: Sequence[float], period_ms: float) -> None:
    """The control-step times against the period, with p50 marked and p99 in the title."""
    p50, p99 = (float(v) for v in np.percentile(tick_ms, [50, 99]))
    ax.hist(tick_ms, bins=30, color="#3a6ea5")
    ax.axvline(period_ms, color="k", ls="--", label=f"period {period_ms:.0f} ms")
    ax.axvline(p50, color="#d62728", ls=":", label=f"p50 {p50:.1f} ms")
    ax.set_xlabel("control step (ms)")
    ax.set_ylabel("ticks")
    ax.legend(fontsize=8)
    ax.set_title(f"control-step time, {len(tick_ms)} ticks (p99 {p99:.1f} ms)", fontsize=10)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Lay out, write atomically (format from the suffix), close."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)
    return path
