"""The attention-balance probe and plot, on every family.

The probe's recorded image→text attention mass equals the materialized softmax, with TACA's
γ and without it (ReferenceTACA with `masses`, an override after the probe's that sees every
joint call whole); the probed model samples exactly as without the probe; the plot shows the
run that made the latent it is given, also after another run, and writes its numbers as JSON.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import folder_paths
import nodes

from reference import ReferenceTACA, identical
from test_families import FAMILIES, run, setup, step_timesteps
from tiny_models import conditioning, empty_latent, sample, timestep, tiny_flux, tiny_sd15, with_attention_override

TOLERANCE = 1e-5
GAMMA = 1.6


def probe(model):
    return nodes.NODE_CLASS_MAPPINGS["TACABalanceProbe"].execute(model=model).result


def plot(balance, samples, prefix="taca_balance/test"):
    return nodes.NODE_CLASS_MAPPINGS["TACABalancePlot"].execute(balance=balance, samples={"samples": samples},
                                                                filename_prefix=prefix).result[0]


def chained(model, override):
    """A clone whose attention override is `override` around the one the model has, as a node
    added after it would chain it."""
    previous = model.model_options["transformer_options"]["optimized_attention_override"]
    return with_attention_override(model, lambda func, *args, **kwargs: override(
        lambda *a, **k: previous(func, *a, **k), *args, **kwargs))


@pytest.mark.parametrize("family", FAMILIES)
def test_recorded_mass_equals_the_materialized_softmax(family, taca):
    model, latent, positive, negative = setup(family, 31, (9, 9))
    t = step_timesteps(model)
    threshold = (t[1] + t[2]) / 2
    probed, balance = probe(taca(model, GAMMA, threshold))
    joints = {family.joint_length(model, latent, 9): family.joint_text(model, latent, 9)}
    masses = []
    reference = ReferenceTACA(lambda t: GAMMA if t >= threshold else 1.0, joints, family.text_first, family.text_queries,
                              timestep=lambda sigma: timestep(model, sigma), masses=masses)
    out = run(family, chained(probed, reference), positive, negative, latent)

    (recorded,) = balance.runs
    expected = [(used, plain) for per_call in masses for used, plain in zip(*per_call)]  # per batch item
    assert len(recorded.calls) == len(expected) > 0
    for (t_, block, branch, used, plain, active), (ref_used, ref_plain) in zip(recorded.calls, expected):
        assert abs(used - ref_used) <= TOLERANCE and abs(plain - ref_plain) <= TOLERANCE
        assert active == (t_ >= threshold)
    assert any(abs(used - plain) > 100 * TOLERANCE for _, _, _, used, plain, _ in recorded.calls)  # TACA moved it
    # The probe only looks: the probed model samples as the model without the probe.
    assert identical(out, run(family, taca(model, GAMMA, threshold), positive, negative, latent))


def test_the_plot_shows_the_run_that_made_the_latent_and_writes_its_numbers(taca, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=33)
    positive, negative, latent = conditioning(model, 12, seed=34), conditioning(model, 12, seed=35), empty_latent(8, 8)
    probed, balance = probe(taca(model, GAMMA, 900.0))
    first = sample(probed, positive, negative, latent, steps=4, seed=1)
    second = sample(probed, positive, negative, latent, steps=6, seed=2)  # re-queued with other settings

    image = plot(balance, first)
    assert image.ndim == 4 and image.shape[0] == 1 and image.shape[-1] == 3 and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.05
    (written,) = tmp_path.glob("taca_balance/test_*.json")
    table = json.loads(written.read_text())
    assert len(table["timesteps"]) == 4 and table["blocks"] == 2  # the first run
    assert table["family"].startswith("FLUX.1") and table["taca_lora"] is None and table["baseline"] is None
    # TACA's settings as numbers, and the comparison the plot makes, in words.
    assert table["taca"] == {"gamma0": GAMMA, "schedule": "step", "threshold": 900.0, "blocks": "all",
                             "branches": ["cond", "uncond"], "description": f"γ₀ {GAMMA:g}, threshold 900"}
    assert table["compared_with"] == "same calls without TACA's γ" and "not a run without TACA" in table["comparison"]
    # Both guidance branches ran (CFG 3), and both are there.
    assert sorted(table["branches"]) == ["cond", "uncond"]
    window = [t >= 900.0 for t in table["timesteps"]]
    assert table["in_window"] == window
    for branch in table["branches"].values():
        assert len(branch["mass_used"]) == 2 and branch["in_window"] == window
        assert branch["taca_on"] == [window, window]
        for inside, used, plain in zip(window, branch["step_mean_used"], branch["step_mean_without_taca"]):
            assert (used != plain) == inside
        for row_change, row_used, row_plain in zip(branch["change"], branch["mass_used"], branch["mass_without_taca"]):
            assert row_change == [u - p for u, p in zip(row_used, row_plain)]
    scale = table["heatmap"]
    changes = [v for b in table["branches"].values() for row in b["change"] for v in row]
    assert (scale["min"], scale["max"]) == (min(changes), max(changes))
    assert scale["colour_scale"] == [-max(0.01, abs(min(changes)), abs(max(changes))), max(0.01, abs(min(changes)), abs(max(changes)))]

    plot(balance, second)
    newest = max(tmp_path.glob("taca_balance/test_*.json"), key=lambda p: p.stat().st_mtime_ns)
    assert len(json.loads(newest.read_text())["timesteps"]) == 6


def test_a_latent_the_probe_did_not_see_is_an_error_that_says_what_to_connect(taca):
    model = tiny_flux(seed=36)
    _, balance = probe(taca(model, GAMMA, 900.0))
    elsewhere = sample(model, conditioning(model, 12, 1), conditioning(model, 12, 2), empty_latent(8, 8), steps=2)
    with pytest.raises(ValueError, match="probe's MODEL output"):
        plot(balance, elsewhere)


def test_probe_without_taca_and_before_it(taca, tmp_path, monkeypatch):
    # The probe alone records the model's own balance; placed before a TACA node it still
    # records the run, with TACA's settings.
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=37)
    positive, negative, latent = conditioning(model, 12, seed=38), conditioning(model, 12, seed=39), empty_latent(8, 8)
    alone, balance = probe(model)
    out = sample(alone, positive, negative, latent, steps=3)
    assert identical(out, sample(model, positive, negative, latent, steps=3))
    assert all(not active and used == plain for *_, used, plain, active in balance.runs[0].calls)

    probed, balance = probe(model)
    later = taca(probed, GAMMA, 900.0)
    sample(later, positive, negative, latent, steps=3)
    assert balance.runs[0].settings.description == f"γ₀ {GAMMA:g}, threshold 900"
    assert any(active for *_, active in balance.runs[0].calls)


def test_without_matplotlib_the_plot_says_how_to_install_it_and_the_numbers_are_written(taca, tmp_path, monkeypatch):
    import sys

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=40)
    probed, balance = probe(taca(model, GAMMA, 900.0))
    out = sample(probed, conditioning(model, 12, seed=41), conditioning(model, 12, seed=42), empty_latent(8, 8), steps=2)
    for module in ("matplotlib", "matplotlib.backends.backend_agg", "matplotlib.figure", "matplotlib.patches"):
        monkeypatch.setitem(sys.modules, module, None)  # as in a Python without matplotlib: import fails
    with pytest.raises(RuntimeError, match="pip install matplotlib"):
        plot(balance, out)
    (written,) = tmp_path.glob("taca_balance/test_*.json")
    assert len(json.loads(written.read_text())["timesteps"]) == 2


def test_nodes_have_tooltips():
    for node_id in ("TACABalanceProbe", "TACABalancePlot"):
        schema = nodes.NODE_CLASS_MAPPINGS[node_id].GET_SCHEMA()
        assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs), node_id


# --- the plot explains itself ---------------------------------------------------------------

PLOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "balance_plots"  # the rendered plots, to look at


def pack_module(name: str):
    """One of the pack's modules ("nodes.probe", "taca.schedule"), as ComfyUI loaded it."""
    root = nodes.NODE_CLASS_MAPPINGS["TACABalancePlot"].__module__.rsplit(".", 2)[0]
    return sys.modules[f"{root}.{name}"]


def plot_with_baseline(balance, samples, baseline_samples, baseline=None, prefix="taca_balance/test"):
    return nodes.NODE_CLASS_MAPPINGS["TACABalancePlot"].execute(
        balance=balance, samples={"samples": samples}, filename_prefix=prefix,
        baseline_samples={"samples": baseline_samples}, baseline=baseline).result[0]


def newest_table(folder) -> dict:
    return json.loads(max(folder.glob("taca_balance/*.json"), key=lambda p: p.stat().st_mtime_ns).read_text())


def save_png(name: str, image: torch.Tensor) -> None:
    PLOTS.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image[0] * 255).round().byte().numpy()).save(PLOTS / f"{name}.png")


def synthetic_run(blocks, kinds, steps, branches, settings=None, lora=None, drift=0.0, seed=0, skipped=()):
    """A BalanceRun as the probe records one: a smooth share per block and step, TACA's γ adding
    0.03 where it is on; `drift` is what a run with TACA adds after its window. The steps
    (0-based) in `skipped` recorded no call, as where a step cache reused an earlier output."""
    probe_module = pack_module("nodes.probe")
    generator = np.random.default_rng(seed)
    run = probe_module.BalanceRun("FLUX.1 (dev, schnell, Fill, Kontext)", settings, blocks, kinds, lora)
    timesteps = [1000.0 * (1 - i / steps) for i in range(steps)]
    run.schedule = [(t, settings is not None and settings.gamma_for([t], [0]) != 1) for t in timesteps]
    for s, t in enumerate(timesteps):
        if s in skipped:
            continue
        for branch in branches:
            for block in range(blocks):
                plain = 0.70 + 0.04 * math.sin(block / 6) - 0.05 * s / steps + 0.01 * branch + generator.normal(0, 2e-4)
                plain += drift * (1 - s / steps) if s > 0 else 0.0
                on = settings is not None and settings.gamma_for([t], [branch]) != 1 and (settings.blocks is None or block in settings.blocks)
                used = plain + 0.03 * on
                run.calls.append((t, block, branch, used, plain, on))
    run.output = torch.full((1, 16, 8, 8), float(seed))
    return run


def synthetic_probe(*runs):
    probe_module = pack_module("nodes.probe")
    balance = probe_module.BalanceProbe()
    balance.runs.extend(runs)
    return balance


def settings(gamma0=1.2, threshold=970.0, blocks=None, cond_only=False):
    patch, schedule = pack_module("nodes.patch"), pack_module("taca.schedule")
    words = f"γ₀ {gamma0:g}, threshold {threshold:g}" + (", blocks 0-18" if blocks else "") + (", cond only" if cond_only else "")
    return patch.TACASettings(schedule.Step(gamma0, threshold), frozenset(blocks) if blocks else None, cond_only, words)


FLUX_KINDS = (("double", 19), ("single", 38))
# name: (blocks, kinds, steps, branches, TACA settings, LoRA, with a baseline run)
SHAPES = {
    "1_block_2_steps": (1, (("double", 1), ("single", 0)), 2, [0], dict(), "with TACA", False),  # as the test model file
    "57_blocks_30_steps_blocks_0-18_baseline": (57, FLUX_KINDS, 30, [0], dict(blocks=range(19)), "with TACA", True),
    "2_branches_50_steps_cond_only_baseline": (57, FLUX_KINDS, 50, [0, 1], dict(cond_only=True, threshold=940.0), None, True),
    "2_branches_10_steps_without_taca": (2, (("double", 1), ("single", 1)), 10, [0, 1], None, None, False),
    "2_branches_10_steps_taca_bypassed_baseline": (2, (("double", 1), ("single", 1)), 10, [0, 1], None, None, True),
    "57_blocks_30_steps_skipped_baseline": (57, FLUX_KINDS, 30, [0, 1], dict(threshold=900.0), "with TACA", True),
    "2_branches_50_steps_skipped": (57, FLUX_KINDS, 50, [0, 1], dict(threshold=940.0), None, False),
}
# name: (steps the run skipped, steps the baseline run skipped), 0-based, as a step cache skips them
SKIPS = {
    "57_blocks_30_steps_skipped_baseline": ({2, 4, 5, 6, 12, 13, 14, 15, 20, 27}, {2, 8, 9}),
    "2_branches_50_steps_skipped": ({1, 3, 4, 5, 20, 21, 33, 48}, set()),
}


def tick_labels(figure):
    """Every visible tick label of the figure, per axis."""
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            yield axes, axis, [label for label in axis.get_ticklabels() if label.get_visible() and label.get_text()]


@pytest.mark.parametrize("name", SHAPES)
def test_the_plot_renders_readably(name, tmp_path, monkeypatch):
    from matplotlib.collections import LineCollection

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    blocks, kinds, steps, branches, taca_settings, lora, with_baseline = SHAPES[name]
    skips, base_skips = SKIPS.get(name, (set(), set()))
    chosen = settings(**taca_settings) if taca_settings is not None else None
    run = synthetic_run(blocks, kinds, steps, branches, chosen, lora, drift=0.004 if chosen else 0.0, seed=1, skipped=skips)
    if with_baseline:
        baseline = synthetic_run(blocks, kinds, steps, branches, seed=2 if chosen else 1, skipped=base_skips)
        baseline.output = torch.full((1, 16, 8, 8), 2.0)
        image = plot_with_baseline(synthetic_probe(baseline, run), run.output, baseline.output)
    else:
        image = plot(synthetic_probe(run), run.output)
    save_png(name, image)
    table = newest_table(tmp_path)
    assert sorted(table["branches"]) == [["cond", "uncond"][b] for b in branches]

    figure = pack_module("nodes.balance_plot").draw_balance(table)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    # No tick labels run together, and every text lies inside the image.
    for axes, axis, labels in tick_labels(figure):
        boxes = [label.get_window_extent(renderer) for label in labels]
        for i, a in enumerate(boxes):
            assert not any(a.overlaps(b) for b in boxes[i + 1:]), f"{name}: tick labels overlap: {[l.get_text() for l in labels]}"
    drawn = figure.get_tightbbox(renderer)  # in inches, everything drawn
    width, height = figure.get_size_inches()
    assert drawn.x0 >= -0.01 and drawn.y0 >= -0.01 and drawn.x1 <= width + 0.01 and drawn.y1 <= height + 0.01, drawn
    for axes in figure.axes:  # a legend stays inside its panel
        legend, frame = axes.get_legend(), axes.get_window_extent(renderer)
        if legend is not None:
            box = legend.get_window_extent(renderer)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name
    heats = [axes for axes in figure.axes if axes.images]
    assert len(heats) == len(branches)
    for axes in heats:
        # Integer block ticks, all inside the model's blocks; the kinds it has named with their blocks.
        ticks = axes.get_yticks()
        assert all(float(t).is_integer() and 0 <= t < blocks for t in ticks) and len(ticks) >= 1
        for kind, count in kinds:
            assert (kind in axes.get_ylabel()) == (count > 0 and len([k for k in kinds if k[1]]) > 1), axes.get_ylabel()
        # The colour scale is symmetric around 0 where it shows a change, and never narrower than ±0.01.
        (shown,) = axes.images
        if table["compared_with"]:
            assert shown.norm.vmin == -shown.norm.vmax and shown.norm.vmax >= 0.01
        else:
            assert shown.norm.vmax - shown.norm.vmin >= 0.05
    words = " ".join(t.get_text() for t in figure.texts)
    assert "image tokens' attention to the prompt" in words and "visual" not in words
    assert table["comparison"].split(":")[0] in words
    assert f"{table['heatmap']['min']:+.3g}".replace("-", "−").lstrip("+") in words or table["heatmap"]["min"] == 0

    # TACA's window: outlined on the cells where its γ was on, on the blocks chosen, nowhere without TACA.
    for axes, branch in zip(heats, table["branches"].values()):
        outlines = [c for c in axes.collections if isinstance(c, LineCollection)]
        on = np.array(branch["taca_on"])
        if not on.any():
            assert not outlines
            continue
        (lines,) = outlines
        points = np.concatenate(lines.get_segments())
        on_blocks = np.nonzero(on.any(axis=1))[0]
        assert points[:, 1].min() == on_blocks.min() - 0.5 and points[:, 1].max() == on_blocks.max() + 0.5
    if chosen is None:
        assert not any(table["in_window"]) and table["taca"] is None
    if chosen is not None and chosen.blocks:
        assert set(np.nonzero(np.array(table["branches"]["cond"]["taca_on"]).any(axis=1))[0]) == set(chosen.blocks)

    # Skipped steps: listed, with no share (null, not 0) and no change, hatched on each heatmap
    # (the other way where only the baseline skipped), gaps in the curves; TACA's window over them.
    skipped = [s in skips for s in range(steps)]
    assert table["skipped"] == skipped
    if chosen is not None:
        assert table["in_window"] == [chosen.gamma_for([t], [0]) != 1 for t in table["timesteps"]]
    plot_module = pack_module("nodes.balance_plot")
    for axes, branch in zip(heats, table["branches"].values()):
        assert branch["skipped"] == skipped
        for s in range(steps):
            gone = s in skips or s in base_skips
            assert all((row[s] is None) == gone for row in branch["change" if table["compared_with"] else "mass_used"])
        hatched = {}
        for patch in axes.patches:
            if patch.get_hatch():
                hatched[(round(patch.get_x() - 0.5), round(patch.get_x() + patch.get_width() - 1.5))] = patch.get_hatch()
        expected = {run_: "///" for run_ in plot_module.runs_of(skipped)}
        expected.update({run_: "\\\\\\" for run_ in plot_module.runs_of([s in base_skips - skips for s in range(steps)])})
        assert hatched == expected, name
    curves = [line for axes in figure.axes if not axes.images for line in axes.get_lines()]
    for line in curves:
        gaps = list(np.isnan(np.asarray(line.get_ydata(), dtype=float)))
        assert gaps == ([s in base_skips for s in range(steps)] if line.get_label().startswith("baseline") else skipped)
    if skips:
        assert f"Skipped: {plot_module.steps_in_words(skipped)} of {steps}" in words.replace("\n", " ")


def test_a_baseline_run_from_the_same_probe_is_compared_cell_by_cell(taca, tmp_path, monkeypatch):
    # The shipped workflow's layout: one probe before TACA and its LoRA records the plain model's
    # run (the baseline) and the TACA run; the heatmap shows their difference.
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=43)
    positive, negative, latent = conditioning(model, 12, seed=44), conditioning(model, 12, seed=45), empty_latent(8, 8)
    probed, balance = probe(model)
    baseline = sample(probed, positive, negative, latent, steps=3, seed=7)
    with_taca = sample(taca(probed, GAMMA, 900.0), positive, negative, latent, steps=3, seed=7)
    assert identical(baseline, sample(model, positive, negative, latent, steps=3, seed=7))

    image = plot_with_baseline(balance, with_taca, baseline)
    save_png("tiny_flux_baseline_and_taca", image)
    table = newest_table(tmp_path)
    assert table["compared_with"] == "baseline run" and table["baseline"]["taca"] is None
    assert "against the baseline run, sampled with no TACA node and no TACA LoRA" in table["comparison"]
    for name, branch in table["branches"].items():
        base = table["baseline"]["branches"][name]["mass_used"]
        assert branch["change"] == [[u - b for u, b in zip(ru, rb)] for ru, rb in zip(branch["mass_used"], base)]
    # TACA's own step moved the share; the baseline run is the plain model's own balance.
    assert abs(table["branches"]["cond"]["change"][0][0]) > 1e-4
    plain_run = balance.run_for(baseline)
    assert all(used == plain and not on for *_, used, plain, on in plain_run.calls)

    # Two identical runs (TACA at γ₀ = 1): nothing changed, and the colours say so at ±0.01.
    same = sample(taca(probed, 1.0, 900.0), positive, negative, latent, steps=3, seed=7)
    assert identical(same, baseline)
    image = plot_with_baseline(balance, same, baseline)
    save_png("tiny_flux_gamma_1_against_baseline", image)
    table = newest_table(tmp_path)
    assert table["heatmap"]["min"] == table["heatmap"]["max"] == 0.0 and table["heatmap"]["colour_scale"] == [-0.01, 0.01]
    assert table["taca"]["gamma0"] == 1.0 and table["baseline"]["taca"] is None  # two runs, told apart


def test_a_baseline_from_another_probe_and_its_mistakes(taca, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=46)
    positive, negative, latent = conditioning(model, 12, seed=47), conditioning(model, 12, seed=48), empty_latent(8, 8)
    plain, plain_balance = probe(model)
    with_taca, taca_balance = probe(taca(model, GAMMA, 900.0))
    baseline = sample(plain, positive, negative, latent, steps=3, seed=3)
    out = sample(with_taca, positive, negative, latent, steps=3, seed=3)
    plot_with_baseline(taca_balance, out, baseline, baseline=plain_balance)
    assert newest_table(tmp_path)["compared_with"] == "baseline run"

    with pytest.raises(ValueError, match="'baseline_samples'"):  # the baseline's probe is not the TACA run's
        plot_with_baseline(taca_balance, out, baseline)
    with pytest.raises(ValueError, match="same steps, scheduler, sampler and denoise"):
        other_steps = sample(plain, positive, negative, latent, steps=4, seed=3)
        plot_with_baseline(taca_balance, out, other_steps, baseline=plain_balance)
    with pytest.raises(ValueError, match="CFG 1 runs the prompt's branch only"):
        cfg_one = sample(plain, positive, negative, latent, steps=3, cfg=1.0, seed=3)
        plot_with_baseline(taca_balance, out, cfg_one, baseline=plain_balance)
    with pytest.raises(ValueError, match="'baseline_samples' is not"):
        nodes.NODE_CLASS_MAPPINGS["TACABalancePlot"].execute(balance=taca_balance, samples={"samples": out},
                                                             filename_prefix="taca_balance/test", baseline=plain_balance)


def test_taca_advanced_settings_are_numbers_and_cond_only_shows_the_negative_branch_untouched(tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=49)
    positive, negative, latent = conditioning(model, 12, seed=50), conditioning(model, 12, seed=51), empty_latent(8, 8)
    advanced = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].execute(
        model=model, gamma=1.5, schedule="cosine", t_start=990.0, t_end=600.0, blocks="1", apply_to="cond only").result[0]
    probed, balance = probe(advanced)
    out = sample(probed, positive, negative, latent, steps=4, seed=4)
    save_png("tiny_flux_advanced_block_1_cond_only", plot(balance, out))
    table = newest_table(tmp_path)
    assert table["taca"] == {"gamma0": 1.5, "schedule": "cosine", "t_start": 990.0, "t_end": 600.0, "blocks": [1],
                             "branches": ["cond"], "description": "γ₀ 1.5, cosine ramp 990→600, blocks 1, cond only"}
    cond, uncond = table["branches"]["cond"], table["branches"]["uncond"]
    ramp_on = [t > 600.0 for t in table["timesteps"]]
    assert cond["taca_on"] == [[False] * 4, ramp_on] and uncond["taca_on"] == [[False] * 4] * 2
    assert uncond["mass_used"] == uncond["mass_without_taca"] and not any(uncond["in_window"])
    assert cond["mass_used"][1] != cond["mass_without_taca"][1] and cond["mass_used"][0] == cond["mass_without_taca"][0]


def test_the_probe_on_an_unsupported_model_names_the_probe():
    with pytest.raises(ValueError, match="bypass the TACA Attention Balance Probe node") as error:
        probe(tiny_sd15())
    assert "TACA Attention Balance Probe cannot be applied" in str(error.value)


def test_plotting_from_a_probe_that_a_second_probe_replaced_says_so(taca, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux(seed=52)
    first, first_balance = probe(taca(model, GAMMA, 900.0))
    second, second_balance = probe(first)
    out = sample(second, conditioning(model, 12, seed=53), conditioning(model, 12, seed=54), empty_latent(8, 8), steps=2)
    with pytest.raises(ValueError, match="went through a second TACA Attention Balance Probe placed after this one") as error:
        plot(first_balance, out)
    assert "replace" not in str(error.value)
    plot(second_balance, out)  # the second probe recorded it
    assert newest_table(tmp_path)["taca"]["gamma0"] == GAMMA


def test_a_run_that_recorded_no_joint_call_asks_whether_another_node_replaced_the_attention(tmp_path, monkeypatch):
    # A diffusion model that drops ComfyUI's transformer_options (as Nunchaku's wrappers do): the
    # probe accepts it (its forward takes them), but no joint call ever reaches the probe.
    from foreign_models import DroppingTransformerOptions, tiny_flux_in

    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model = tiny_flux_in(DroppingTransformerOptions, seed=55)
    probed, balance = probe(model)
    out = sample(probed, conditioning(model, 12, seed=56), conditioning(model, 12, seed=57), empty_latent(8, 8), steps=3)
    with pytest.raises(ValueError, match="recorded no joint attention call of FLUX.1") as error:
        plot(balance, out)
    message = str(error.value)
    assert "in any of its 3 steps" in message and "Was another node replacing the model's attention" in message, message
    assert not list(tmp_path.glob("taca_balance/*.json"))  # no numbers for a run with none
