"""The attention-balance plot: a recorded run (probe.BalanceRun) as numbers and as a figure.

The figure has two panels: a heatmap of the image→text attention mass, joint blocks ×
steps, with the mass the model used; and each step's mean over the blocks, with TACA and
without it. The steps inside TACA's window are marked. matplotlib draws it on its own
canvas (no pyplot, so no global backend is set).
"""

from collections import OrderedDict

import numpy as np

from .patch import COND


def balance_table(run) -> dict:
    """A run's record of the prompt's guidance branch (cond), as lists: per step and block.

    A step of the sampler's schedule with no joint call recorded was skipped (a step cache
    reused an earlier output): it is listed, marked in `skipped`, with no mass (None)."""
    steps, cells = OrderedDict(), {}
    for t, block, branch, used, plain, active in run.calls:
        if branch != COND:
            continue
        step = steps.setdefault(round(t, 6), len(steps))
        cell = cells.setdefault((step, block), [0.0, 0.0, 0, False])
        cell[0] += used
        cell[1] += plain
        cell[2] += 1
        cell[3] |= active
    order, skipped = list(steps), {}
    for t, active in getattr(run, "schedule", ()):
        key = round(t, 6)
        if all(abs(key - k) > 1e-3 for k in order):  # inserted in time order: before the first step below it
            skipped[key] = active
            order.insert(next((i for i, k in enumerate(order) if k < key), len(order)), key)
    position = {key: i for i, key in enumerate(order)}
    blocks = run.blocks
    used = [[None] * len(order) for _ in range(blocks)]
    plain = [[None] * len(order) for _ in range(blocks)]
    window = [skipped.get(key, False) for key in order]
    recorded = list(steps)
    for (step, block), (u, p, n, active) in cells.items():
        column = position[recorded[step]]
        if block < blocks:
            used[block][column], plain[block][column] = u / n, p / n
        window[column] |= active
    return {
        "family": run.family, "taca": run.settings, "blocks": blocks, "block_kinds": [list(k) for k in run.kinds],
        "timesteps": order, "in_window": window, "skipped": [key in skipped for key in order],
        "mass_used": used, "mass_without_taca": plain,
        "step_mean_used": [mean(column) for column in zip(*used)] if order else [],
        "step_mean_without_taca": [mean(column) for column in zip(*plain)] if order else [],
    }


def mean(values):
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def balance_figure(table: dict) -> np.ndarray:
    """The plot as an RGB image, (height, width, 3) uint8."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Rectangle
    except ImportError as error:
        raise RuntimeError(
            "TACA Attention Balance Plot draws with matplotlib, which this ComfyUI's Python lacks. Install the "
            "pack's requirements into it (pip install -r custom_nodes/<this pack>/requirements.txt, or "
            "pip install matplotlib), then restart ComfyUI. This run's numbers were written as JSON all the same."
        ) from error

    used = np.array([[np.nan if v is None else v for v in row] for row in table["mass_used"]], dtype=float)
    steps = len(table["timesteps"])
    figure = Figure(figsize=(12, 5.5), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    heat, means = figure.subplots(1, 2, width_ratios=(1.35, 1))
    title = f"{table['family']}: image→text attention mass"
    figure.suptitle(f"{title}   ·   TACA {table['taca']}" if table["taca"] else f"{title}   ·   no TACA node")

    shown = heat.imshow(used, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                        extent=(0.5, steps + 0.5, -0.5, table["blocks"] - 0.5))
    figure.colorbar(shown, ax=heat, label="share of visual queries' attention on text keys")
    heat.set_xlabel("sampling step (forward)")
    spans, start = [], 0
    for kind, count in table["block_kinds"]:
        spans.append(f"{kind} {start}" + (f"–{start + count - 1}" if count > 1 else ""))
        if len(table["block_kinds"]) > 1 and start:
            heat.axhline(start - 0.5, color="white", linewidth=0.8, linestyle=":")
        start += count
    heat.set_ylabel("joint block, in call order" + (f" ({', '.join(spans)})" if len(spans) > 1 else ""))
    heat.yaxis.get_major_locator().set_params(integer=True)
    heat.set_title("mass the model used; TACA's window dashed")
    window = [i + 1 for i, inside in enumerate(table["in_window"]) if inside]
    if window:  # outline TACA's window over the heatmap
        heat.add_patch(Rectangle((min(window) - 0.5, -0.5), max(window) - min(window) + 1, table["blocks"],
                                 fill=False, edgecolor="#2a9d8f", linewidth=2.5, linestyle="--"))

    x = np.arange(1, steps + 1)
    with_taca = [np.nan if v is None else v for v in table["step_mean_used"]]
    without = [np.nan if v is None else v for v in table["step_mean_without_taca"]]
    for step in window:
        means.axvspan(step - 0.5, step + 0.5, color="#2a9d8f", alpha=0.18, linewidth=0)
    means.plot(x, without, marker="o", markersize=3, color="#555555", label="without TACA")
    means.plot(x, with_taca, marker="o", markersize=3, color="#e76f51", label="as sampled (TACA's γ where on)")
    means.set_xlabel("sampling step (forward)")
    means.set_ylabel("mean over joint blocks")
    means.set_title("per-step mean; TACA's window shaded")
    means.set_xlim(0.5, steps + 0.5)
    means.grid(alpha=0.3)
    means.legend(loc="best", fontsize=9)
    for axes in (heat, means):
        ticks = x if steps <= 12 else np.unique(np.linspace(1, steps, 8).round().astype(int))
        axes.set_xticks(ticks)
        axes.set_xticklabels([f"{i}\nt={table['timesteps'][i - 1]:.0f}" for i in ticks], fontsize=8)

    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
