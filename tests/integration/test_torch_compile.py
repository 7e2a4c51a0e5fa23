"""TACA composes with ComfyUI's TorchCompileModel node, placed before or after it.

torch.compile traces TACA's attention override into the compiled diffusion model. With
PyTorch SDPA, the attention ComfyUI picks on a GPU, the model compiles without a graph
break, inside the window and outside it.
"""

import pytest
from torch._dynamo.utils import counters

from tiny_models import MODELS, conditioning, empty_latent, sample, sigmas, with_attention_backend

STEPS = 4
GAMMA = 1.3
# Inductor reorders fp32 arithmetic: compiled and eager sampling differ by about 2e-4 on
# these models, with TACA and without it.
TOLERANCE = 1e-3


@pytest.mark.parametrize("family", ["flux", "sd3.5-medium"])
def test_taca_before_or_after_torch_compile_matches_eager_taca(family, taca, torch_compile):
    model = with_attention_backend(MODELS[family](seed=1), "pytorch")
    latent = empty_latent(8, 8)
    positive, negative = conditioning(model, 20, seed=2), conditioning(model, 20, seed=3)
    s = sigmas(model, STEPS)
    threshold = 500 * float(s[1] + s[2])  # the window is the first two of the four steps

    def run(m):
        return sample(m, positive, negative, latent, steps=STEPS)

    eager = run(taca(model, GAMMA, threshold))
    compiled_without_taca = run(torch_compile(model))
    for order, patched in (("TACA after TorchCompileModel", taca(torch_compile(model), GAMMA, threshold)),
                           ("TACA before TorchCompileModel", torch_compile(taca(model, GAMMA, threshold)))):
        out = run(patched)
        error, effect = (out - eager).abs().max().item(), (out - compiled_without_taca).abs().max().item()
        assert error <= TOLERANCE, f"{order}: differs from eager TACA by {error}"
        assert effect > 50 * TOLERANCE, f"{order}: TACA changed the compiled model's output by only {effect}"
    assert not counters["graph_break"], f"graph breaks: {list(counters['graph_break'])}"
