"""PNG timelines of the benchmarks (`--plot FILE`), drawn with matplotlib (Agg: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rate_series(
    times: Sequence[float], *, samples_per_step: float, t0: float, bin_s: float
) -> tuple[list[float], list[float]]:
    """Samples/s in consecutive bins of `bin_s` seconds from step-end times (seconds since t0)."""
    if not times:
        return [], []
    end = max(times) - t0
    bins = max(1, int(end / bin_s))
    counts = [0] * bins
    for t in times:
        index = int((t - t0) / bin_s)
        if 0 <= index < bins:
            counts[index] += 1
    return [(i + 0.5) * bin_s for i in range(bins)], [c * samples_per_step / bin_s for c in counts]


def balancing_timeline(path: Path, data: Mapping[str, Any]) -> None:
    """Per-worker batch shares (top) and job throughput (bottom) through a transient straggler: Paceline's
    live shares vs plain DDP with equal shares; the slow period shaded, change points and switches marked."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, constrained_layout=True)
    t0, end = data["t0"], data["window_s"]
    for ax in (top, bottom):
        ax.axvspan(data["onset"] - t0, data["recovered"] - t0, color="tab:red", alpha=0.08, lw=0)
        for at in data["rebalances"]:
            ax.axvline(at - t0, color="grey", lw=0.8, ls=":")
        for change in data["changes"]:
            ax.axvline(change - t0, color="tab:red", lw=1.0, ls="--")
    steps = data["shares"]  # [(time, [share per rank]), ...] in time order
    ranks = len(steps[0][1])
    for rank in range(ranks):
        xs = [max(0.0, t - t0) for t, _ in steps] + [end]
        ys = [shares[rank] for _, shares in steps] + [steps[-1][1][rank]]
        label = (
            f"w{rank} (speed {data['speeds'][rank]:g}{', straggler' if rank == data['straggler'] else ''})"
        )
        top.step(xs, ys, where="post", lw=2, label=label)
    top.set_ylabel("batch share b_m (samples)")
    top.set_title(
        f"Balancing through a {data['slowdown']:g}× slowdown of w{data['straggler']} (shaded): "
        "dashed = change point detected, dotted = shares switched"
    )
    top.legend(loc="upper right", fontsize=8)
    for kind, label, color in (
        ("paceline", "Paceline (live shares)", "tab:blue"),
        ("ddp", "plain DDP, equal shares", "tab:orange"),
    ):
        xs, ys = rate_series(
            data["times"][kind],
            samples_per_step=data["global_batch"],
            t0=data["t0s"][kind],
            bin_s=data["bin_s"],
        )
        bottom.plot(xs, ys, color=color, lw=1.5, label=label)
    bottom.axhline(data["ideal_sps"], color="grey", lw=1, ls="-.", label="ideal (Σ capacities, healthy)")
    bottom.set_xlabel("seconds")
    bottom.set_ylabel("job samples/s")
    bottom.set_xlim(0, end)
    bottom.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def momentum_curves(path: Path, curves: Mapping[str, Mapping[str, Any]]) -> None:
    """Training loss vs parameter-server updates per scenario (worker count, or named like "hetero"): fixed
    μ = target, the grid's best fixed μ, and Paceline's automatic compensation (its explicit momentum on the
    right axis)."""
    plt = _pyplot()
    counts = list(curves)
    fig, axes = plt.subplots(
        1, len(counts), figsize=(4 * len(counts), 3.8), sharey=True, constrained_layout=True
    )
    for ax, workers in zip(axes, counts, strict=True):
        c = curves[workers]
        for key, label, color in (
            ("fixed", f"fixed μ={c['target']:g}", "tab:orange"),
            ("best", f"best fixed μ={c['best_mu']:g}", "tab:green"),
            ("auto", "Paceline auto", "tab:blue"),
        ):
            xs, ys = zip(*c[key], strict=True) if c[key] else ((), ())
            ax.plot(xs, ys, color=color, lw=1.6, label=label)
        ax.axhline(c["target_loss"], color="grey", lw=0.8, ls=":")
        # x shows the best and the automatic runs; a fixed μ = target run that never gets there is cut
        ends = [c[key][-1][0] for key in ("best", "auto") if c[key]]
        if ends:
            ax.set_xlim(0, 1.5 * max(ends))
        ax.set_yscale("log")
        ax.set_title(f"M = {workers} asynchronous workers" if workers.isdigit() else f"{workers} workers")
        ax.set_xlabel("updates")
        if c["explicit"]:
            twin = ax.twinx()
            xs, ys = zip(*c["explicit"], strict=True)
            xs, ys = [*xs, c["auto"][-1][0]], [*ys, ys[-1]]  # hold the last value to the end of the run
            twin.step(xs, ys, where="post", color="tab:blue", lw=1.0, ls="--", alpha=0.7)
            twin.set_ylim(-0.5, 1.0)
            if workers == counts[-1]:
                twin.set_ylabel("auto: explicit μ (dashed)")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("full training loss")
    fig.suptitle(
        "Asynchronous SGD to a target loss (dotted): fixed momentum vs Paceline's automatic compensation "
        "(dashed: its explicit μ, right axis)",
        fontsize=10,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
