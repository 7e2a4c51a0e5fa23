"""ComfyUI's step caches with TACA: EasyCache and LazyCache.

EasyCache skips the diffusion model's forward (a DIFFUSION_MODEL wrapper, which FLUX runs;
ComfyUI's MMDiT runs no such wrappers, so EasyCache never skips SD3), LazyCache a whole
step's prediction (any model). With settings that make them skip steps inside TACA's window:
- TACA with the cache equals ReferenceTACA with the same cache: the window is honoured on the
  forwards that run, and a skipped step reuses what the cache kept;
- at γ₀ = 1, TACA with the cache is bit-identical to the cache alone, in both orders;
- the balance plot's numbers list the skipped steps as skipped, with no mass, not as zeros,
  and TACA's window over them; its figure hatches and labels them on each branch's heatmap
  and leaves gaps in the per-step curves (the PNGs go to test-artifacts/balance_plots/).
"""

import json

import numpy as np
import pytest

import folder_paths
from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode

from reference import ReferenceTACA, identical, max_difference, recording, step_gamma
from test_balance import chained, pack_module, plot, probe, save_png
from tiny_models import (conditioning, empty_latent, image_tokens, sample, sigmas, timestep, tiny_flux,
                         tiny_sd35_medium, with_attention_override)

STEPS = 8
GAMMA = 1.6
N_TEXT = 9
TOLERANCE = 1e-4
CACHES = {"EasyCache": EasyCacheNode, "LazyCache": LazyCacheNode}
MODELS = {"flux": tiny_flux, "sd3.5-medium": tiny_sd35_medium}
CASES = [("EasyCache", "flux"), ("LazyCache", "flux"), ("LazyCache", "sd3.5-medium")]


def cached(cache, model):
    """The cache on every step, reusing outputs as long as it may (its highest threshold)."""
    return CACHES[cache].execute(model=model, reuse_threshold=3.0, start_percent=0.0, end_percent=1.0,
                                 verbose=False).result[0]


def setup(family, seed):
    model = MODELS[family](seed=seed)
    latent = empty_latent(8, 10)
    positive, negative = conditioning(model, N_TEXT, seed + 1), conditioning(model, N_TEXT, seed + 2)
    steps = [timestep(model, s) for s in sigmas(model, STEPS)[:-1].tolist()]
    threshold = (steps[4] + steps[5]) / 2  # the window: the first five of eight steps
    return model, N_TEXT + image_tokens(model, latent), steps, threshold, \
        lambda m: sample(m, positive, negative, latent, steps=STEPS)


def steps_that_ran(model, calls, joint_length) -> set:
    return {round(timestep(model, c.sigma), 3) for c in calls if c.k_len == joint_length}


@pytest.mark.parametrize("cache,family", CASES)
def test_taca_with_a_cache_equals_the_reference_with_it(cache, family, taca):
    model, joint_length, steps, threshold, run = setup(family, 71)
    calls = []
    reference = ReferenceTACA(step_gamma(GAMMA, threshold), {joint_length: N_TEXT},
                              timestep=lambda sigma: timestep(model, sigma))
    ref = run(cached(cache, with_attention_override(
        model, lambda func, *args, **kwargs: recording(calls)(lambda *a, **k: reference(func, *a, **k), *args, **kwargs))))
    ran = steps_that_ran(model, calls, joint_length)
    skipped_inside = [t for t in steps if t >= threshold and round(t, 3) not in ran]
    assert skipped_inside and len(ran & {round(t, 3) for t in steps if t >= threshold}) >= 2, \
        f"{cache} skipped no step inside the window, or ran fewer than two there: ran {sorted(ran)} of {steps}"

    cache_alone = run(cached(cache, model))
    for order, patched in (("TACA, then the cache", cached(cache, taca(model, GAMMA, threshold))),
                           ("the cache, then TACA", taca(cached(cache, model), GAMMA, threshold))):
        out = run(patched)
        error, effect = max_difference(out, ref), max_difference(out, cache_alone)
        assert error <= TOLERANCE, f"{order}: differs from the reference with {cache} by {error}"
        assert effect > 10 * TOLERANCE, f"{order}: TACA changed the output by only {effect}"


@pytest.mark.parametrize("cache,family", CASES)
def test_gamma_one_with_a_cache_is_the_cache_alone(cache, family, taca):
    model, _, _, threshold, run = setup(family, 73)
    cache_alone = run(cached(cache, model))
    assert identical(run(cached(cache, taca(model, 1.0, threshold))), cache_alone)
    assert identical(run(taca(cached(cache, model), 1.0, threshold)), cache_alone)


@pytest.mark.parametrize("cache,family", CASES)
def test_the_plot_lists_skipped_steps_as_skipped(cache, family, taca, tmp_path, monkeypatch):
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path))
    model, joint_length, steps, threshold, run = setup(family, 75)
    probed, balance = probe(taca(model, GAMMA, threshold))
    calls = []
    out = run(cached(cache, chained(probed, recording(calls))))
    ran = steps_that_ran(model, calls, joint_length)
    assert 0 < len(ran) < STEPS

    save_png(f"{cache}_{family.replace('.', '')}_skipped_steps", plot(balance, out))
    (written,) = tmp_path.glob("taca_balance/test_*.json")
    table = json.loads(written.read_text())
    skipped = [round(t, 3) not in ran for t in steps]
    window = [t >= threshold for t in steps]
    assert [round(t, 3) for t in table["timesteps"]] == [round(t, 3) for t in steps]  # every step, in order
    assert table["skipped"] == skipped and any(s and w for s, w in zip(skipped, window))
    assert table["in_window"] == window
    assert sorted(table["branches"]) == ["cond", "uncond"]
    for name, branch in table["branches"].items():
        # The cache skips a step for both branches: no share there (null, not 0), and TACA's
        # window over it where its γ would have been on.
        assert branch["skipped"] == skipped and branch["in_window"] == window, name
        assert branch["taca_on"] == [window] * table["blocks"], name
        for i, was_skipped in enumerate(skipped):
            column = [row[i] for row in branch["mass_used"] + branch["mass_without_taca"] + branch["change"]]
            assert all(v is None for v in column) if was_skipped else all(isinstance(v, float) for v in column)
            assert (branch["step_mean_used"][i] is None) == (branch["step_mean_without_taca"][i] is None) == was_skipped

    # The figure: each run of skipped steps hatched and labelled on each branch's heatmap, a gap
    # in every per-step curve, and the statement at the top says which steps.
    figure = pack_module("nodes.balance_plot").draw_balance(table)
    figure.canvas.draw()
    heats = [axes for axes in figure.axes if axes.images]
    (means,) = [axes for axes in figure.axes if axes.get_lines() and not axes.images]
    runs = pack_module("nodes.balance_plot").runs_of(skipped)
    assert len(heats) == 2
    for axes in heats:
        hatched = sorted((round(p.get_x() - 0.5), round(p.get_x() + p.get_width() - 1.5)) for p in axes.patches if p.get_hatch())
        assert hatched == runs
        assert [t.get_text() for t in axes.texts] == ["skipped"] * len(runs)
    for line in means.get_lines():
        assert list(np.isnan(np.asarray(line.get_ydata(), dtype=float))) == skipped, line.get_label()
    statement = " ".join(t.get_text() for t in figure.texts).replace("\n", " ")
    assert f"Skipped: {pack_module('nodes.balance_plot').steps_in_words(skipped)} of {STEPS}" in statement
