"""The attention-balance probe and plot, on every family.

The probe's recorded image→text attention mass equals the materialized softmax, with TACA's
γ and without it (ReferenceTACA with `masses`, an override after the probe's that sees every
joint call whole); the probed model samples exactly as without the probe; the plot shows the
run that made the latent it is given, also after another run, and writes its numbers as JSON.
"""

import json

import pytest
import torch

import folder_paths
import nodes

from reference import ReferenceTACA, identical
from test_families import FAMILIES, run, setup, step_timesteps
from tiny_models import conditioning, empty_latent, sample, timestep, tiny_flux, with_attention_override

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
    assert len(table["timesteps"]) == 4 and table["blocks"] == 2 and len(table["mass_used"]) == 2  # the first run
    assert table["taca"] == f"γ₀ {GAMMA:g}, threshold 900" and table["family"].startswith("FLUX.1")
    assert table["in_window"] == [t >= 900.0 for t in table["timesteps"]]
    for inside, used, plain in zip(table["in_window"], table["step_mean_used"], table["step_mean_without_taca"]):
        assert (used != plain) == inside

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
    assert balance.runs[0].settings == f"γ₀ {GAMMA:g}, threshold 900"
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
