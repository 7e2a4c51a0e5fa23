"""Diffusion models from outside ComfyUI's comfy.ldm, put in place the way packs such as Nunchaku do.

Such a pack builds ComfyUI's model for the family (BaseModel, model_sampling, conditioning)
and then sets its own module as BaseModel.diffusion_model. Each class here wraps a tiny FLUX.1
(ComfyUI's comfy.ldm.flux.model.Flux) and runs it. They differ only in what they do with
ComfyUI's transformer_options, which carry the attention override TACA works through:

    WithoutTransformerOptions    its forward takes no transformer_options (ComfyUI's keyword
                                 lands in **kwargs) and runs the model without them
    DroppingTransformerOptions   its forward takes transformer_options and drops them, as
                                 Nunchaku's FLUX.1 wrapper (ComfyFluxWrapper) does
    PassingTransformerOptions    its forward hands them on

In the first two, the attention runs without ComfyUI's override. Each keeps the timestep of
each forward it ran (`timesteps`).
"""

import torch

import comfy.supported_models
from tiny_families.flux import CONFIG, flux_params
from tiny_models import as_patcher, randomize_weights


class WithoutTransformerOptions(torch.nn.Module):
    def __init__(self, flux):
        super().__init__()
        self.flux = flux
        self.dtype = flux.dtype  # ComfyUI's BaseModel asks its diffusion model for it
        self.timesteps = []

    def forward(self, x, timestep, context, y=None, guidance=None, control=None, **kwargs):
        self.timesteps.append(float(timestep.flatten()[0]))
        kwargs.pop("transformer_options", None)
        return self.flux(x, timestep, context, y=y, guidance=guidance, control=control, **kwargs)


class DroppingTransformerOptions(WithoutTransformerOptions):
    def forward(self, x, timestep, context, y=None, guidance=None, control=None, transformer_options={}, **kwargs):
        self.timesteps.append(float(timestep.flatten()[0]))
        return self.flux(x, timestep, context, y=y, guidance=guidance, control=control, **kwargs)


class PassingTransformerOptions(WithoutTransformerOptions):
    def forward(self, x, timestep, context, y=None, guidance=None, control=None, transformer_options={}, **kwargs):
        self.timesteps.append(float(timestep.flatten()[0]))
        return self.flux(x, timestep, context, y=y, guidance=guidance, control=control,
                         transformer_options=transformer_options, **kwargs)


def tiny_flux_in(wrapper, seed: int = 0):
    """A ModelPatcher of ComfyUI's FLUX.1 BaseModel whose diffusion model is `wrapper` around a
    tiny FLUX.1 with the weights tiny_models.tiny_flux(seed) has; wrapper=None: ComfyUI's own."""
    config = comfy.supported_models.Flux(flux_params(CONFIG))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({})
    randomize_weights(model.diffusion_model, seed)
    if wrapper is not None:
        model.diffusion_model = wrapper(model.diffusion_model)
    return as_patcher(model)
