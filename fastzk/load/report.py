"""Output of `fastzk load`: the live progress line, the final table and the figures.

rich and matplotlib are imported inside the functions: the measuring processes never load
them, and matplotlib is optional (``pip install 'fastzk[bench]'``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastzk.load.config import LoadConfig, LoadResult
from fastzk.load.latency import Interval, counts_summary, merge_histograms


def _ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


class LiveLine:
    """One self-updating line on stderr: ops/s and latency percentiles of the last interval."""

    def __init__(self, cfg: LoadConfig) -> None:
        from rich.console import Console
        from rich.live import Live

        self.cfg = cfg
        self.console = Console(stderr=True)
        self.live = Live("", console=self.console, auto_refresh=False, transient=True)
        self.prev_t = 0.0

    def start(self) -> None:
        self.live.start()
        self.live.update(f"[dim]{self.cfg.workload}: connecting, warming up...[/]", refresh=True)

    def update(self, item: Interval) -> None:
        t, pairs, errors, events = item
        counts = dict(pairs)
        span = max(t - self.prev_t, 1e-6)
        self.prev_t = t
        s = counts_summary(counts)
        line = (
            f"[bold]{t:6.1f}s[/] {self.cfg.workload}  "
            f"[cyan]{sum(counts.values()) / span:>12,.0f} ops/s[/]  "
            f"p50 {_ms(s['p50'])}  p99 {_ms(s['p99'])}  p99.9 {_ms(s['p99.9'])}  "
            f"max {_ms(s['max'])} ms"
        )
        if events:
            line += f"  events {events / span:,.0f}/s"
        line += f"  errors [{'red' if errors else 'green'}]{errors}[/]"
        self.live.update(line, refresh=True)

    def stop(self) -> None:
        self.live.stop()


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "0"


def print_table(result: LoadResult, title: str = "fastzk load") -> None:
    """The final human-readable table (rich), one metric per row so it fits any terminal."""
    from rich.console import Console
    from rich.table import Table

    c = result.config
    lat = result.latency_us
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    server = c["servers"] or f"{c['host']}:{c['port']}"
    rows: list[tuple[str, str]] = [("server", server)]
    if c.get("preset"):
        rows.append(("workload", f"preset {c['preset']}, {c['keys']} keys/items, "
                                 f"{c['value_size']} B values"))
    else:
        rows.append(("workload", f"{result.workload}, {c['value_size']} B values, "
                                 f"{c['keys']} keys"))
    shape = f"{c['sessions']} sessions"
    if c.get("preset"):
        shape += {
            "kafka": f" (brokers), {c['depth']} requests in flight each",
            "lock": " (contenders)",
            "watch-fanout": f" (1 writer at {c['rate'] or 200:g} writes/s, the rest watch)",
            "session-churn": f" (churning slots, {c['expire_pct']}% left to expire)",
        }.get(c["preset"], "")
    elif result.mode == "open":
        shape += f", open loop at {result.rate:,.0f} req/s"
    else:
        shape += f" x {c['depth']} in flight (closed loop)"
    if c["processes"] > 1:
        shape += f", {c['processes']} processes"
    rows.append(("load", shape))
    rows.append(("measured", f"{result.elapsed:.2f} s after {c['warmup']:g} s warm-up"
                 + (f" ({c['ops']:,} ops)" if c.get("ops") else "")))
    rows.append(("throughput", f"{result.ops_per_sec:,.0f} requests/s"))
    rows.append(("replies", f"{result.ops:,}"))
    origin = " (from intended send)" if result.mode == "open" else ""
    for name in ("p50", "p90", "p99", "p99.9", "max", "mean"):
        rows.append((f"latency {name}{origin}", f"{_ms(lat[name])} ms"))
    if result.service_us:
        s = result.service_us
        rows.append(("service time p50/p99/p99.9/max",
                     " / ".join(_ms(s[k]) for k in ("p50", "p99", "p99.9", "max")) + " ms"))
    if len(result.by_kind) > 1 or any(not k["request"] for k in result.by_kind.values()):
        for kind, info in result.by_kind.items():
            k = info["latency_us"]
            rows.append((
                f"  {kind}{'' if info['request'] else ' (event)'}",
                f"{info['per_sec']:,.0f}/s  p50 {_ms(k['p50'])}  p99 {_ms(k['p99'])}  "
                f"max {_ms(k['max'])} ms",
            ))
    rows.append(("errors (window)", _errors(result.errors)))
    rows.append(("errors (whole run)", _errors(result.errors_total)))
    chk = result.check
    if chk.get("enabled") or chk.get("violations"):
        rows.append(("check", f"{chk.get('checked', 0):,} replies verified, "
                              f"{chk.get('violations', 0)} violations"))
    for key, value in result.extra.items():
        if isinstance(value, int | float | str) and not key.startswith("_"):
            rows.append((f"  {key}", f"{value:,}" if isinstance(value, int) else str(value)))
    rows.append((
        "CPU load / server / other",
        " / ".join(_pct(v) for v in (result.client_cpu, result.server_cpu, result.other_cpu))
        + f" (of one core; {result.cores} cores)",
    ))
    for name, value in rows:
        table.add_row(name, value)
    console = Console()
    console.print(table)
    for message in chk.get("messages", [])[:10]:
        console.print(f"[red]violation:[/] {message}", highlight=False)


# --- figures --------------------------------------------------------------------------------------

#: Percentiles of the distribution plot: 0 .. 99.999 evenly on the "number of nines" axis.
_NINES = [i / 20 for i in range(0, 101)]  # 0 .. 5 nines


def percentile_curve(encoded: str) -> tuple[list[float], list[float]]:
    """(nines, latency ms) points of an encoded histogram's percentile spectrum."""
    hist = merge_histograms([encoded])
    total = hist.get_total_count()
    xs: list[float] = []
    ys: list[float] = []
    if not total:
        return xs, ys
    max_nines = min(5.0, math.log10(max(total, 10)))
    for n in _NINES:
        if n > max_nines:
            break
        p = 100.0 * (1 - 10 ** (-n))
        xs.append(n)
        ys.append(hist.get_value_at_percentile(p) / 1000)
    return xs, ys


def _nines_axis(ax: Any) -> None:
    ticks = [0, 1, 2, 3, 4, 5]
    ax.set_xticks(ticks)
    ax.set_xticklabels(["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
    ax.set_xlabel("percentile")


def plot_runs(
    runs: Sequence[tuple[str, LoadResult]], path: str, title: str, kind: str | None = None,
    extra_kinds: Sequence[str] = (),
) -> None:
    """Latency over time (p50/p99 per interval, log scale) and the latency distribution of
    one or several runs (e.g. the same scenario on two servers) in one PNG. *kind* plots a
    by_kind entry (e.g. ``notify``) instead of all requests in the distribution panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_d) = plt.subplots(1, 2, figsize=(13, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, res) in enumerate(runs):
        color = colors[i % len(colors)]
        tl = res.timeline
        if tl:
            ts = [p["t"] for p in tl]
            ax_t.plot(ts, [max(p["p50"], 1) / 1000 for p in tl], color=color, ls="-",
                      label=f"{label} p50")
            ax_t.plot(ts, [max(p["p99"], 1) / 1000 for p in tl], color=color, ls="--",
                      label=f"{label} p99")
            ax_t.plot(ts, [max(p["max"], 1) / 1000 for p in tl], color=color, ls=":",
                      alpha=0.6, label=f"{label} max")
        encoded = res.histogram
        rate = f"{res.ops_per_sec:,.0f} req/s"
        if kind and kind in res.by_kind:
            encoded = res.by_kind[kind].get("histogram", "")
            rate = f"{res.by_kind[kind]['per_sec']:,.0f} {kind}/s"
        xs, ys = percentile_curve(encoded)
        if xs:
            ax_d.plot(xs, ys, color=color, label=f"{label} ({rate})")
        for j, extra in enumerate(extra_kinds):
            info = res.by_kind.get(extra)
            if not info:
                continue
            xs, ys = percentile_curve(info.get("histogram", ""))
            if xs:
                ax_d.plot(xs, ys, color=colors[(i + j + 1) % len(colors)], ls="-.",
                          label=f"{extra} ({info['per_sec']:,.0f}/s)")
    ax_t.set_yscale("log")
    ax_t.set_xlabel("seconds into the measured window")
    ax_t.set_ylabel("latency, ms (per 0.5 s interval)")
    ax_t.set_title("latency over time")
    ax_t.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    ax_d.set_yscale("log")
    _nines_axis(ax_d)
    ax_d.set_ylabel("latency, ms")
    ax_d.set_title("latency distribution" + (f" ({kind})" if kind else ""))
    ax_d.grid(True, which="both", alpha=0.3)
    ax_d.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(result: LoadResult, path: str) -> None:
    """``--plot FILE.png`` of one run. Presets with event kinds (notify, acquire...) get one
    distribution curve per kind next to all requests."""
    events = [k for k, v in result.by_kind.items() if not v["request"]]
    title = f"fastzk load: {result.workload} on {result.config['host']}:{result.config['port']}"
    runs: list[tuple[str, LoadResult]] = [("requests", result)]
    plot_runs(runs, path, title, extra_kinds=events)
