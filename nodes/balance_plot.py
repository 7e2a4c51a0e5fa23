"""The attention-balance plot: recorded runs (probe.BalanceRun) as numbers and as a figure.

What it plots is the share of the image tokens' attention that goes to the prompt's text
tokens, per joint block and step, for each guidance branch that ran. The heatmap shows what
TACA changed, by one of two comparisons, and the figure says which:

- with a baseline run (a second run on the same steps, from the model without TACA, recorded
  by a probe): the run's share minus the baseline's, cell by cell. That is the whole effect of
  TACA and its LoRA, as a user sees it in the image;
- without one: each attention call with TACA's γ minus the same call with γ = 1. That is
  TACA's direct effect on that call alone: earlier blocks and steps, and the TACA LoRA, stay
  as TACA made them, so it is no baseline.

The colour scale is symmetric around 0 and never narrower than ±MIN_CHANGE_SPAN, so a change
far below it (noise, or a bypassed TACA) stays pale instead of stretching to full colour.
matplotlib draws on its own canvas (no pyplot, so no global backend is set).
"""

import math
import textwrap
from collections import OrderedDict
from typing import Optional

import numpy as np

from ..taca.schedule import Ramp, Step
from .patch import COND, UNCOND

MIN_CHANGE_SPAN = 0.01  # the heatmap's colours reach at least ±0.01 of share
MIN_SHARE_SPAN = 0.05  # with nothing to compare, the share's colours span at least 0.05
MIN_MEAN_SPAN = 0.02  # the per-step curves' axis spans at least 0.02 of share
SKIPPED_HATCH = "#8c8c8c"  # the hatching over a step with no joint call recorded
BRANCH_NAMES = {COND: "cond", UNCOND: "uncond"}
BRANCH_WORDS = {"cond": "prompt (cond)", "uncond": "negative prompt (uncond)"}
SHARE = "share of the image tokens' attention that goes to the prompt"
BASELINE, WITHOUT_GAMMA = "baseline run", "same calls without TACA's γ"
PLOT = "TACA Attention Balance Plot"
HEATMAP_WORDS = {BASELINE: "this run − the baseline run", WITHOUT_GAMMA: "with γ − without γ, same call"}


def settings_numbers(settings) -> Optional[dict]:
    """TACA's settings (patch.TACASettings) as numbers, or None without a TACA node."""
    if settings is None:
        return None
    schedule = settings.schedule
    numbers = {"gamma0": getattr(schedule, "gamma0", None)}
    if isinstance(schedule, Step):
        numbers.update(schedule="step", threshold=schedule.threshold)
    elif isinstance(schedule, Ramp):
        numbers.update(schedule=schedule.shape, t_start=schedule.t_start, t_end=schedule.t_end)
    else:
        numbers.update(schedule=type(schedule).__name__)
    numbers["blocks"] = "all" if settings.blocks is None else sorted(settings.blocks)
    numbers["branches"] = ["cond"] if settings.cond_only else ["cond", "uncond"]
    numbers["description"] = settings.description
    return numbers


def run_in_words(taca: Optional[dict], lora: Optional[str]) -> str:
    """What sampled a run: 'TACA (γ₀ 1.2, threshold 970) and the TACA LoRA (with TACA)'."""
    words = f"TACA ({taca['description']})" if taca else "no TACA node"
    if lora:
        return f"{words} and the TACA LoRA ({lora})"
    return words + (" and no TACA LoRA" if not taca else "")


def run_grids(run) -> tuple:
    """A run's timesteps and, per guidance branch that ran, its cells as block × step lists:
    mass used, mass without TACA's γ, TACA on; and the steps with no joint call of the branch.

    The timesteps are one per model call, in order, and each step of the sampler's schedule
    (run.schedule) at which no joint call was recorded, in time order: a step cache (EasyCache,
    LazyCache) reused an earlier output there. In such a column a branch is `skipped`, with no
    mass (None, never 0), and TACA on where TACA's settings put its γ on at that step and
    block: its window, over a step that did not run."""
    steps, cells = OrderedDict(), {}
    for t, block, branch, used, plain, on in run.calls:
        step = steps.setdefault(round(t, 6), len(steps))
        cell = cells.setdefault((branch, step, block), [0.0, 0.0, 0, False])
        cell[0] += used
        cell[1] += plain
        cell[2] += 1
        cell[3] |= on
    columns = list(steps)
    for t, _ in run.schedule:
        key = round(t, 6)
        if all(abs(key - k) > 1e-3 for k in columns):  # in time order: before the first step below it
            columns.insert(next((i for i, k in enumerate(columns) if k < key), len(columns)), key)
    column = {step: columns.index(key) for key, step in steps.items()}
    grids = {}
    for branch in sorted({key[0] for key in cells}):
        grid = {name: [[None] * len(columns) for _ in range(run.blocks)] for name in ("mass_used", "mass_without_taca")}
        grid["taca_on"] = [[False] * len(columns) for _ in range(run.blocks)]
        ran = {column[step] for b, step, _ in cells if b == branch}
        grid["skipped"] = [s not in ran for s in range(len(columns))]
        for s in (s for s in range(len(columns)) if s not in ran):
            for block in range(run.blocks):
                grid["taca_on"][block][s] = would_be_on(run.settings, columns[s], branch, block)
        grids[BRANCH_NAMES.get(branch, f"branch {branch}")] = grid
    for (branch, step, block), (used, plain, n, on) in cells.items():
        if block < run.blocks:
            grid = grids[BRANCH_NAMES.get(branch, f"branch {branch}")]
            grid["mass_used"][block][column[step]] = used / n
            grid["mass_without_taca"][block][column[step]] = plain / n
            grid["taca_on"][block][column[step]] = on
    return columns, grids


def would_be_on(settings, t: float, branch: int, block: int) -> bool:
    """Whether TACA's settings put its γ on for this step, branch and joint block."""
    return (settings is not None and (settings.blocks is None or block in settings.blocks)
            and settings.gamma_for([t], [branch]) != 1)


def mean(values):
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def minus(a, b):
    return [[None if x is None or y is None else x - y for x, y in zip(row_a, row_b)] for row_a, row_b in zip(a, b)]


def balance_table(run, baseline=None) -> dict:
    """The plot's numbers, for the JSON and the figure: a run and, if given, its baseline run."""
    timesteps, branches = run_grids(run)
    taca = settings_numbers(run.settings)
    table = {
        "family": run.family, "blocks": run.blocks, "block_kinds": [list(k) for k in run.kinds],
        "timesteps": timesteps, "taca": taca, "taca_lora": run.lora,
        "in_window": [any(any(row[s] for row in grid["taca_on"]) for grid in branches.values())
                      for s in range(len(timesteps))],
        # a step of the sampler's with no joint call recorded (a step cache reused an earlier output)
        "skipped": [all(grid["skipped"][s] for grid in branches.values()) for s in range(len(timesteps))],
        "branches": branches, "baseline": None,
    }
    for grid in branches.values():
        grid["in_window"] = [any(row[s] for row in grid["taca_on"]) for s in range(len(timesteps))]
        grid["step_mean_used"] = [mean(column) for column in zip(*grid["mass_used"])] if timesteps else []
        grid["step_mean_without_taca"] = [mean(column) for column in zip(*grid["mass_without_taca"])] if timesteps else []
    this_run = run_in_words(taca, run.lora)
    if baseline is not None:
        base_steps, base_branches = run_grids(baseline)
        check_baseline(run, baseline, timesteps, base_steps, branches, base_branches)
        base_taca = settings_numbers(baseline.settings)
        table["baseline"] = {"taca": base_taca, "taca_lora": baseline.lora, "branches": {
            name: {"mass_used": base_branches[name]["mass_used"], "skipped": base_branches[name]["skipped"],
                   "step_mean_used": [mean(column) for column in zip(*base_branches[name]["mass_used"])]}
            for name in branches}}
        for name, grid in branches.items():
            grid["change"] = minus(grid["mass_used"], base_branches[name]["mass_used"])
        table["compared_with"] = BASELINE
        table["change_is"] = "this run's share minus the baseline run's, per joint block and step"
        table["comparison"] = (f"Compared: this run, sampled with {this_run}, against the baseline run, sampled with "
                               f"{run_in_words(base_taca, baseline.lora)}, on the same steps.")
    elif taca is not None:
        for grid in branches.values():
            grid["change"] = minus(grid["mass_used"], grid["mass_without_taca"])
        table["compared_with"] = WITHOUT_GAMMA
        table["change_is"] = "each attention call's share with TACA's γ minus the same call's with γ = 1"
        kept = f"earlier blocks and steps and the TACA LoRA ({run.lora})" if run.lora else "earlier blocks and steps"
        table["comparison"] = (f"Compared: each attention call with TACA's γ ({taca['description']}) against the same "
                               f"call with γ = 1. The {kept} stay as TACA made them, so this is not a run without TACA: "
                               f"connect a baseline run to baseline_samples for that.")
    else:
        table["compared_with"] = None
        table["change_is"] = None
        table["comparison"] = (f"Nothing compared: this run has {this_run}, and no baseline run is connected, so the "
                               f"heatmap shows the share itself. Add TACA, or connect a baseline run, to see a change.")
    table["heatmap"] = heatmap_scale(table)
    return table


def check_baseline(run, baseline, timesteps, base_steps, branches, base_branches) -> None:
    """The baseline is comparable cell by cell: the same blocks, steps and guidance branches."""
    if (baseline.family, baseline.blocks) != (run.family, run.blocks):
        raise ValueError(
            f"{PLOT}: the baseline run is of {baseline.family} with {baseline.blocks} joint blocks, the run to plot of "
            f"{run.family} with {run.blocks}. Sample the baseline from the same model loader, without TACA."
        )
    if len(base_steps) != len(timesteps) or any(abs(a - b) > 1e-3 for a, b in zip(base_steps, timesteps)):
        raise ValueError(
            f"{PLOT}: the baseline run's {len(base_steps)} steps and model calls are at t = {summary(base_steps)}, the "
            f"run to plot's {len(timesteps)} at t = {summary(timesteps)}. Sample both with the same steps, scheduler, sampler and "
            f"denoise (one KSamplerSelect and BasicScheduler for both, as the shipped workflow does)."
        )
    missing = [name for name in branches if name not in base_branches]
    if missing:
        raise ValueError(
            f"{PLOT}: the baseline run has no {' or '.join(missing)} branch, which the run to plot has: sample both with "
            f"the same guidance (CFG 1 runs the prompt's branch only)."
        )


def summary(timesteps) -> str:
    shown = ", ".join(f"{t:.0f}" for t in timesteps[:4])
    return shown + (f", … {timesteps[-1]:.0f}" if len(timesteps) > 4 else "")


def heatmap_scale(table: dict) -> dict:
    """What the heatmap shows, the range of its values and the range of its colours."""
    key = "change" if table["compared_with"] else "mass_used"
    values = np.array([v for grid in table["branches"].values() for row in grid[key] for v in row if v is not None],
                      dtype=float)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if table["compared_with"]:
        reach = max(abs(low), abs(high), MIN_CHANGE_SPAN)
        return {"shows": table["change_is"], "min": low, "max": high, "colour_scale": [-reach, reach],
                "minimum_colour_span": [-MIN_CHANGE_SPAN, MIN_CHANGE_SPAN]}
    centre, half = (low + high) / 2, max(high - low, MIN_SHARE_SPAN) / 2
    return {"shows": "the share as sampled", "min": low, "max": high, "colour_scale": [centre - half, centre + half],
            "minimum_colour_span": MIN_SHARE_SPAN}


def signed(x: float) -> str:
    return "0" if x == 0 else f"{x:+.3g}".replace("-", "−")


def nice_stride(span: int, most: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 25, 50, … that puts at most `most` ticks on `span` + 1 values."""
    for magnitude in (10 ** p for p in range(6)):
        for base in (1, 2, 5, 10, 25):
            stride = base * magnitude
            if span // stride + 1 <= most:
                return stride
    return max(1, span)


def integer_ticks(first: int, last: int, most: int) -> list:
    """Integer ticks from `first` to `last`, at most `most` of them (about), at round numbers."""
    if last - first + 1 <= most:
        return list(range(first, last + 1))
    stride = nice_stride(last - first, most - 1)
    ticks = [t for t in range(0, last + 1, stride) if t >= first]
    if ticks[0] - first >= stride / 2:
        ticks.insert(0, first)
    return ticks


def outline(axes, on: np.ndarray, **style) -> bool:
    """Outline the cells (block × step, True) where TACA's γ was on; whether there were any."""
    from matplotlib.collections import LineCollection

    padded = np.pad(on, 1)
    segments = []
    for b, s in zip(*np.nonzero(on)):  # padded[b + 1, s + 1] is this cell: draw each side it shares with an off cell
        x0, x1, y0, y1 = s + 0.5, s + 1.5, b - 0.5, b + 0.5
        if not padded[b, s + 1]:
            segments.append([(x0, y0), (x1, y0)])
        if not padded[b + 2, s + 1]:
            segments.append([(x0, y1), (x1, y1)])
        if not padded[b + 1, s]:
            segments.append([(x0, y0), (x0, y1)])
        if not padded[b + 1, s + 2]:
            segments.append([(x1, y0), (x1, y1)])
    if segments:
        axes.add_collection(LineCollection(segments, **style))
    return bool(segments)


def runs_of(flags) -> list:
    """(first, last) index of each run of True in `flags`: [F, T, T, F, T] → [(1, 2), (4, 4)]."""
    runs = []
    for i, flag in enumerate(flags):
        if flag and runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        elif flag:
            runs.append((i, i))
    return runs


def steps_in_words(flags) -> str:
    """The 1-based steps flagged, as ranges: 'steps 3, 5–7'."""
    parts = [f"{a + 1}" if a == b else f"{a + 1}–{b + 1}" for a, b in runs_of(flags)]
    return ("step " if sum(map(bool, flags)) == 1 else "steps ") + ", ".join(parts)


def skipped_in_words(table: dict) -> Optional[str]:
    """The figure's statement of the steps with no joint call recorded, or None where there are none."""
    branches = table["branches"]
    per_branch = {name: grid["skipped"] for name, grid in branches.items() if any(grid["skipped"])}
    baseline = {}
    if table["compared_with"] == BASELINE:
        baseline = {name: [b and not s for b, s in zip(grid["skipped"], branches[name]["skipped"])]
                    for name, grid in table["baseline"]["branches"].items()}
        baseline = {name: flags for name, flags in baseline.items() if any(flags)}
    if not per_branch and not baseline:
        return None

    def which(flags_per_branch):  # 'steps 3, 5–7', or per branch where they differ
        if len({tuple(flags) for flags in flags_per_branch.values()}) == 1 and len(flags_per_branch) == len(branches):
            return steps_in_words(next(iter(flags_per_branch.values())))
        return "; ".join(f"{steps_in_words(flags)} ({name})" for name, flags in flags_per_branch.items())

    words = []
    if per_branch:
        words.append(f"Skipped: {which(per_branch)} of {len(table['timesteps'])} recorded no joint attention call (a step "
                     f"cache, such as EasyCache or LazyCache, reused an earlier output there). No share there, not a share "
                     f"of 0: hatched on the heatmap, gaps in the curves.")
    if baseline:
        words.append(f"The baseline run skipped {which(baseline)}, where this run has a share: no change to show there "
                     f"(hatched the other way).")
    return " ".join(words)


def hatch_skipped(axes, flags, blocks: int, column_inches: float, hatch: str, words: str) -> None:
    """Hatch each run of skipped columns over all blocks, and name it where the column is wide enough."""
    from matplotlib.patches import Rectangle

    for first, last in runs_of(flags):
        axes.add_patch(Rectangle((first + 0.5, -0.5), last - first + 1, blocks, facecolor="#f4f4f4",
                                 edgecolor=SKIPPED_HATCH, hatch=hatch, linewidth=0, zorder=1.5))
        if (last - first + 1) * column_inches >= 0.17:  # an 8-point label, turned upright, fits in the run
            axes.text((first + last) / 2 + 1, (blocks - 1) / 2, words, rotation=90, ha="center", va="center",
                      fontsize=8, color="#404040", zorder=1.6,
                      bbox=dict(facecolor="#f4f4f4", edgecolor="none", alpha=0.85, pad=1.5))


def as_array(grid) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in grid], dtype=float).reshape(len(grid), -1)


def draw_balance(table: dict):
    """The plot as a matplotlib Figure (on an Agg canvas)."""
    try:
        from matplotlib import colormaps
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch
    except ImportError as error:
        raise RuntimeError(
            f"{PLOT} draws with matplotlib, which this ComfyUI's Python lacks. Install the "
            "pack's requirements into it (pip install -r custom_nodes/<this pack>/requirements.txt, or "
            "pip install matplotlib), then restart ComfyUI. This run's numbers were written as JSON all the same."
        ) from error

    branches = list(table["branches"])
    steps, blocks = len(table["timesteps"]), table["blocks"]
    comparing = table["compared_with"]
    scale = table["heatmap"]
    lines = [textwrap.fill(table["comparison"], 165)]
    if comparing:
        lines.append(textwrap.fill(
            f"Heatmap: {HEATMAP_WORDS[comparing]}, per joint block and step: {signed(scale['min'])} to "
            f"{signed(scale['max'])}. Colours span ±{scale['colour_scale'][1]:.3g} (never less than ±{MIN_CHANGE_SPAN:g}, "
            f"so smaller changes stay pale); red: more attention to the prompt, blue: less.", 165))
    else:
        lines.append(f"Heatmap: the share as sampled, from {scale['min']:.4f} to {scale['max']:.4f}; colours span "
                     f"{scale['colour_scale'][0]:.3f} to {scale['colour_scale'][1]:.3f}, never less than {MIN_SHARE_SPAN:g}.")
    skipped_words = skipped_in_words(table)
    if skipped_words:
        lines.append(textwrap.fill(skipped_words, 165))
    text = "\n".join(lines)
    header = 0.55 + 0.19 * text.count("\n")  # inches: the title and the statement lines
    height = 2.6 + 2.5 * len(branches) + header
    figure = Figure(figsize=(13, height), dpi=100)
    FigureCanvasAgg(figure)
    figure.set_layout_engine("constrained", rect=(0, 0, 1, 1 - header / height))
    figure.text(0.5, 1 - 0.12 / height, f"{table['family']}: the image tokens' attention to the prompt",
                ha="center", va="top", fontsize=14, fontweight="bold")
    figure.text(0.5, 1 - 0.45 / height, text, ha="center", va="top", fontsize=9.5, linespacing=1.35)

    grid = figure.add_gridspec(len(branches), 2, width_ratios=(1.3, 1))
    heats = [figure.add_subplot(grid[i, 0]) for i in range(len(branches))]
    means = figure.add_subplot(grid[:, 1])
    cmap = colormaps["RdBu_r" if comparing else "viridis"].with_extremes(bad="#d9d9d9")  # grey: a block that did not run
    low, high = scale["colour_scale"]
    spans, start = [], 0
    for kind, count in table["block_kinds"]:
        if count:  # a kind the model has none of (FLUX without single blocks) is not named
            spans.append((kind, start, count))
        start += count
    window_style = dict(colors="#1a7f37", linewidths=2.5, linestyles=(0, (3, 2)))
    drawn_window = False
    for axes, name in zip(heats, branches):
        branch = table["branches"][name]
        values = as_array(branch["change"] if comparing else branch["mass_used"])
        shown = axes.imshow(values, aspect="auto", origin="lower", cmap=cmap, vmin=low, vmax=high,
                            interpolation="nearest", extent=(0.5, steps + 0.5, -0.5, blocks - 0.5))
        column_inches = 13 * 1.3 / 2.3 * 0.8 / max(steps, 1)  # about: the heatmap's share of the figure's width
        hatch_skipped(axes, branch["skipped"], blocks, column_inches, "///", "skipped")
        if comparing == BASELINE:
            base_skipped = table["baseline"]["branches"][name]["skipped"]
            hatch_skipped(axes, [b and not s for b, s in zip(base_skipped, branch["skipped"])], blocks, column_inches,
                          "\\\\\\", "baseline skipped")
        drawn_window |= outline(axes, as_array(branch["taca_on"]).astype(bool), **window_style)
        for kind, first, count in spans[1:]:
            axes.axhline(first - 0.5, color="#555555", linewidth=0.8, linestyle=":")
        title = f"{BRANCH_WORDS.get(name, name)} branch"
        if table["taca"] and name not in table["taca"]["branches"]:
            title += ": TACA off here (cond only)"
        axes.set_title(title, fontsize=10)
        axes.set_yticks(integer_ticks(0, blocks - 1, 12 if len(branches) == 1 else 7))
        axes.set_ylim(-0.5, blocks - 0.5)
        kinds = ", ".join(f"{kind} {first}" + (f"–{first + count - 1}" if count > 1 else "") for kind, first, count in spans)
        axes.set_ylabel("joint block" + (f"\n({kinds})" if len(spans) > 1 else ""), fontsize=9)
        axes.set_xticks(integer_ticks(1, steps, 12))
        axes.set_xlim(0.5, steps + 0.5)
        if axes is heats[-1]:
            axes.set_xlabel("step", fontsize=9)
        else:
            axes.tick_params(labelbottom=False)
    figure.colorbar(shown, ax=heats, label=HEATMAP_WORDS.get(comparing, "share"), fraction=0.05, pad=0.02)

    x = np.arange(1, steps + 1)
    for s in (i + 1 for i, on in enumerate(table["in_window"]) if on):
        means.axvspan(s - 0.5, s + 0.5, color="#1a7f37", alpha=0.15, linewidth=0)
    skipped_steps = [any(table["branches"][name]["skipped"][s] for name in branches) for s in range(steps)]
    for first, last in runs_of(skipped_steps):
        means.axvspan(first + 0.5, last + 1.5, facecolor="none", edgecolor=SKIPPED_HATCH, hatch="///", linewidth=0)
    this_run = "this run" if table["taca"] is None else "with TACA"
    plotted = []
    handles, labels = [], []  # with two branches: each run's colour once, then each branch's line style
    for name in branches:
        branch = table["branches"][name]
        style = dict(linestyle="-", marker="o") if name == "cond" else dict(linestyle="--", marker="s")
        series = []  # what this run is compared with first, so this run's curve is drawn over it where they meet
        if comparing == BASELINE:
            series.append(("baseline run", table["baseline"]["branches"][name]["step_mean_used"], "#2e6da4"))
        elif comparing == WITHOUT_GAMMA:
            series.append(("same calls, γ = 1", branch["step_mean_without_taca"], "#7f7f7f"))
        series.append((this_run, branch["step_mean_used"], "#c0392b"))
        for words, values, colour in series:
            values = [np.nan if v is None else v for v in values]
            plotted += [v for v in values if not np.isnan(v)]
            (line,) = means.plot(x, values, color=colour, markersize=3.5, linewidth=1.6,
                                 label=words + (f", {name}" if len(branches) > 1 else ""), **style)
            if len(branches) == 1:
                handles.append(line)
                labels.append(words)
            elif words not in labels:
                handles.append(Line2D([], [], color=colour, linewidth=1.6))
                labels.append(words)
    if len(branches) > 1:
        for name in branches:
            style = dict(linestyle="-", marker="o") if name == "cond" else dict(linestyle="--", marker="s")
            handles.append(Line2D([], [], color="#555555", markersize=3.5, linewidth=1.2, **style))
            labels.append(name)
    if any(table["in_window"]):
        handles.append(Patch(color="#1a7f37", alpha=0.15))
        labels.append("TACA's γ on" + (" (dashed on the heatmap)" if drawn_window else ""))
    if any(skipped_steps):
        handles.append(Patch(facecolor="#f4f4f4", edgecolor=SKIPPED_HATCH, hatch="///", linewidth=0))
        labels.append("skipped: no joint call")
    if plotted:  # the curves below, the legend in the headroom above them
        span = max(max(plotted) - min(plotted), MIN_MEAN_SPAN) * 1.1
        bottom = (min(plotted) + max(plotted)) / 2 - span / 2
        means.set_ylim(bottom, bottom + span / (1 - 0.05 - 0.055 * math.ceil(len(labels) / 2)))
    means.set_title("mean over the joint blocks, per step", fontsize=10)
    means.set_ylabel(f"{SHARE}\n(axis spans at least {MIN_MEAN_SPAN:g})", fontsize=9)
    means.set_xlabel("step", fontsize=9)
    means.set_xlim(0.5, steps + 0.5)
    ticks = integer_ticks(1, steps, 8)
    means.set_xticks(ticks)
    top = means.secondary_xaxis("top")
    top.set_xticks(ticks, labels=[f"{table['timesteps'][s - 1]:.0f}" for s in ticks], fontsize=8)
    top.set_xlabel("t (0–1000; TACA is on while t ≥ its threshold)", fontsize=8)
    means.grid(alpha=0.3)
    means.legend(handles, labels, loc="upper center", ncols=2, fontsize=8, framealpha=0.9)
    return figure


def balance_figure(table: dict) -> np.ndarray:
    """The plot as an RGB image, (height, width, 3) uint8."""
    figure = draw_balance(table)
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
