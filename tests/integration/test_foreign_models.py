"""TACA on a diffusion model whose attention never reaches ComfyUI's override stops with an error, not a silent no-op.

Packs such as Nunchaku replace the diffusion model with a class of their own that drops
ComfyUI's transformer_options, so no attention override ever runs (foreign_models.py builds
such classes around a tiny FLUX.1). TACA says so, naming the class and its module:
- at the node, where the class is not ComfyUI's and its forward takes no transformer_options;
- otherwise at the first step inside TACA's window, where no joint call reached TACA, before
  the second forward; with γ₀ = 1 (no window) such a model samples as without TACA.
A class that hands transformer_options on works: TACA gives, bit for bit, what it gives on
ComfyUI's own FLUX.1 with the same weights.
"""

import pytest

import nodes

from foreign_models import DroppingTransformerOptions, PassingTransformerOptions, WithoutTransformerOptions, tiny_flux_in
from reference import identical, max_difference
from tiny_models import conditioning, empty_latent, sample, sigmas

GAMMA = 1.6
STEPS = 4


def inputs(model):
    return conditioning(model, 9, seed=61), conditioning(model, 9, seed=62), empty_latent(8, 10)


def threshold(model):
    s = sigmas(model, STEPS)
    return 500 * float(s[1] + s[2])  # the window: the first two of four steps


def says_which_model(message: str, wrapper) -> bool:
    return (wrapper.__name__ in message and wrapper.__module__ in message
            and "does not go through ComfyUI's attention" in message)


@pytest.mark.parametrize("node", ["TACA", "TACA Advanced", "TACA Attention Balance Probe"])
def test_a_class_whose_forward_takes_no_transformer_options_is_refused_at_the_node(node, taca):
    model = tiny_flux_in(WithoutTransformerOptions, seed=60)
    with pytest.raises(ValueError) as error:
        if node == "TACA":
            taca(model, GAMMA, 900.0)
        elif node == "TACA Advanced":
            nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"].execute(
                model=model, gamma=GAMMA, schedule="step (paper)", t_start=900.0, t_end=900.0, blocks="0",
                apply_to="cond and uncond")
        else:
            nodes.NODE_CLASS_MAPPINGS["TACABalanceProbe"].execute(model=model)
    assert says_which_model(str(error.value), WithoutTransformerOptions), str(error.value)
    assert str(error.value).startswith(f"{node if 'Probe' in node else 'TACA'} cannot be applied"), str(error.value)
    assert model.model.diffusion_model.timesteps == []


def test_a_class_that_drops_them_stops_at_the_first_step_inside_the_window(taca):
    model = tiny_flux_in(DroppingTransformerOptions, seed=60)
    positive, negative, latent = inputs(model)
    patched = taca(model, GAMMA, threshold(model))  # the class takes transformer_options: it may hand them on
    with pytest.raises(RuntimeError) as error:
        sample(patched, positive, negative, latent, steps=STEPS)
    message = str(error.value)
    assert says_which_model(message, DroppingTransformerOptions) and "first step inside its window" in message, message
    ran = model.model.diffusion_model.timesteps
    assert ran and set(ran) == {float(sigmas(model, STEPS)[0])}, ran  # the first step's forwards only

    # γ₀ = 1: TACA is off, and the model samples as without it.
    alone = sample(model, positive, negative, latent, steps=STEPS)
    assert identical(sample(taca(model, 1.0, threshold(model)), positive, negative, latent, steps=STEPS), alone)


def test_a_class_that_hands_them_on_gets_taca_as_comfyuis_own_model_does(taca):
    wrapped, own = tiny_flux_in(PassingTransformerOptions, seed=60), tiny_flux_in(None, seed=60)
    positive, negative, latent = inputs(own)
    out = sample(taca(wrapped, GAMMA, threshold(wrapped)), positive, negative, latent, steps=STEPS)
    assert len(set(wrapped.model.diffusion_model.timesteps)) == STEPS
    assert identical(out, sample(taca(own, GAMMA, threshold(own)), positive, negative, latent, steps=STEPS))
    assert max_difference(out, sample(own, positive, negative, latent, steps=STEPS)) > 1e-3
