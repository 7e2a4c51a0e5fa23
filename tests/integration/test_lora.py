"""TACALoraLoader in a real ComfyUI: the official TACA LoRA, applied at forward time.

The LoRA files are synthetic, written at test time (tiny_loras.py): in the official format
for FLUX.1 and SD3.5-Medium, and on every layer ComfyUI's key map knows for each other family
(test_families_lora.py). The reference is ComfyUI's own merged LoRA (LoraLoaderModelOnly at
the same strength).
"""

import json
import logging

import pytest
import torch

import comfy.model_management
import comfy.sample
import comfy.sd
import nodes

from tiny_loras import FLUX_TARGETS, SD3_TARGETS, lora_loader, merged_lora, official_lora
from tiny_models import conditioning, empty_latent, sigmas, tiny_flux, tiny_sd3, tiny_sd35_medium

BUILDERS = {"flux": (tiny_flux, FLUX_TARGETS), "sd3.5-medium": (tiny_sd35_medium, SD3_TARGETS)}


def run(model, steps=4, schedule=None, latent=None, add_noise=True, seed=0):
    """Sample with ComfyUI's sampler; `schedule` runs just those sigmas, from `latent`."""
    positive, negative = conditioning(model, 9, seed=1), conditioning(model, 9, seed=2)
    latent = empty_latent(8, 10) if latent is None else latent
    noise = comfy.sample.prepare_noise(latent, seed) if add_noise else torch.zeros_like(latent)
    return comfy.sample.sample(model, noise, steps, 3.0, "euler", "simple", positive, negative, latent,
                               sigmas=schedule, disable_pbar=True, seed=seed)


def threshold_after_steps(model, steps, k):
    """A threshold that puts exactly the first k of `steps` steps in the window."""
    s = sigmas(model, steps)
    return float(500 * (s[k - 1] + s[k]))


@pytest.mark.parametrize("family", BUILDERS)
def test_every_step_equals_comfyui_merged_lora(family, loras):
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    ours = run(lora_loader(model, name, active="every step"))
    merged = run(merged_lora(model, name))
    assert (ours - merged).abs().max() < 1e-4
    assert (ours - run(model)).abs().max() > 1e-3  # the LoRA does something


@pytest.mark.parametrize("family", BUILDERS)
def test_inside_the_window_equals_merged_lora_with_taca(family, loras, taca):
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    # threshold 0: every step is in the window
    ours = run(taca(lora_loader(model, name), 1.2, 0.0))
    reference = run(taca(merged_lora(model, name), 1.2, 0.0))
    assert (ours - reference).abs().max() < 1e-4


@pytest.mark.parametrize("family", BUILDERS)
def test_outside_the_window_bit_identical_to_no_lora(family, loras, taca):
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    steps, k = 6, 2
    threshold = threshold_after_steps(model, steps, k)
    later = sigmas(model, steps)[k:]  # only steps below the threshold
    start = run(model, steps=2)  # some latent to continue from
    with_lora = run(taca(lora_loader(model, name), 1.2, threshold), schedule=later, latent=start)
    without = run(taca(model, 1.2, threshold), schedule=later, latent=start)
    assert torch.equal(with_lora, without)


@pytest.mark.parametrize("family", BUILDERS)
def test_run_across_the_threshold_is_the_two_pieces_stitched(family, loras, taca):
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    steps, k = 6, 2
    threshold = threshold_after_steps(model, steps, k)
    schedule = sigmas(model, steps)
    crossing = run(taca(lora_loader(model, name), 1.2, threshold), steps=steps)
    # LoRA merged by ComfyUI above the threshold, no LoRA below it
    first = run(taca(merged_lora(model, name), 1.2, threshold), schedule=schedule[:k + 1])
    stitched = run(taca(model, 1.2, threshold), schedule=schedule[k:], latent=first, add_noise=False)
    assert (crossing - stitched).abs().max() < 1e-4
    no_lora = run(taca(model, 1.2, threshold), steps=steps)
    assert (crossing - no_lora).abs().max() > 1e-3  # the window is not empty


@pytest.mark.parametrize("family", BUILDERS)
def test_with_taca_advanced_it_is_on_where_any_gamma_differs_from_one(family, loras):
    # A ramp down to 1 at the threshold, cond only: γ differs from 1 on the first k steps (for
    # the cond branch), so the LoRA is on for those steps, on both branches, and off after them.
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    steps, k = 6, 3
    schedule = sigmas(model, steps)
    advanced = nodes.NODE_CLASS_MAPPINGS["TACAAdvanced"]

    def shaped(m):
        return advanced.execute(model=m, gamma=1.4, schedule="linear", t_start=1000.0,
                                t_end=threshold_after_steps(model, steps, k), blocks="all", apply_to="cond only").result[0]

    crossing = run(shaped(lora_loader(model, name)), steps=steps)
    first = run(shaped(merged_lora(model, name)), schedule=schedule[:k + 1])
    stitched = run(shaped(model), schedule=schedule[k:], latent=first, add_noise=False)
    assert (crossing - stitched).abs().max() < 1e-4
    assert (crossing - run(shaped(model), steps=steps)).abs().max() > 1e-3  # the LoRA was on


@pytest.mark.parametrize("family", BUILDERS)
def test_node_order_does_not_matter(family, loras, taca):
    build, targets = BUILDERS[family]
    model = build()
    name = loras(f"taca_{family}.safetensors", official_lora(model, targets))
    threshold = threshold_after_steps(model, 4, 2)
    lora_first = run(taca(lora_loader(model, name), 1.2, threshold))
    taca_first = run(lora_loader(taca(model, 1.2, threshold), name))
    assert torch.equal(lora_first, taca_first)
    assert not torch.equal(lora_first, run(taca(model, 1.2, threshold)))


def test_input_model_and_weights_untouched(loras):
    model = tiny_sd35_medium()
    name = loras("taca.safetensors", official_lora(model, SD3_TARGETS))
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    baseline = run(model)
    patched = lora_loader(model, name, active="every step")
    run(patched)
    assert patched is not model and not model.object_patches
    assert torch.equal(run(model), baseline)
    after = model.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_fp8_weights_match_a_float32_bypass_reference(loras):
    """fp8 base weights stay fp8; the LoRA is added beside them in the compute dtype."""
    source = tiny_sd35_medium()
    weights = source.model.diffusion_model.state_dict()
    fp8 = comfy.sd.load_diffusion_model_state_dict(
        {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in weights.items()},
        model_options={"dtype": torch.float8_e4m3fn},
    )
    # the fp8 model's own weights held in fp32, with ComfyUI's merged LoRA as the reference
    rounded = comfy.sd.load_diffusion_model_state_dict(
        {k: v.float() for k, v in fp8.model.diffusion_model.state_dict().items()},
    )
    name = loras("taca.safetensors", official_lora(source, SD3_TARGETS))
    fp8_weight_before = fp8.model.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight.clone()
    ours = run(lora_loader(fp8, name, active="every step"))
    reference = run(merged_lora(rounded, name))
    assert fp8_weight_before.dtype == torch.float8_e4m3fn
    assert (ours - reference).abs().max() < 1e-4
    after = fp8.model.diffusion_model.joint_blocks[0].x_block.attn.qkv.weight
    assert after.dtype == torch.float8_e4m3fn and torch.equal(after.float(), fp8_weight_before.float())


def forward(model, x, sigma, positive):
    """One apply_model call as the sampler makes it, with the patcher's wrappers and object patches."""
    options = {**model.model_options.get("transformer_options", {}), "wrappers": model.wrappers, "sigmas": sigma}
    cond, extra = positive[0]
    return model.model.apply_model(x, sigma, c_crossattn=cond, y=extra["pooled_output"], transformer_options=options)


def test_partial_lowvram_load(loras):
    """Layers left to lowvram's cast-on-the-fly path still get the LoRA, and match the merge."""
    model = tiny_sd35_medium()
    name = loras("taca.safetensors", official_lora(model, SD3_TARGETS))
    positive = conditioning(model, 9, seed=1)
    x, sigma = torch.randn(1, 16, 8, 10, generator=torch.Generator().manual_seed(3)), torch.tensor([0.9])
    with torch.inference_mode():
        merged = merged_lora(model, name)
        merged.patch_model()
        reference = forward(merged, x, sigma, positive)
        merged.unpatch_model()
        ours = lora_loader(model, name, active="every step")
        ours.patch_model(lowvram_model_memory=1)  # one byte: every layer is cast on the fly
        cast = [m for m in ours.model.modules() if getattr(m, "comfy_cast_weights", False)]
        out = forward(ours, x, sigma, positive)
        ours.unpatch_model()
    assert len(cast) > 10
    assert (out - reference).abs().max() < 1e-4


def test_factors_are_freed_when_the_model_is_unloaded(loras):
    model = tiny_sd35_medium()
    name = loras("taca.safetensors", official_lora(model, SD3_TARGETS))
    patched = lora_loader(model, name, active="every step")
    run(patched)
    adds = [p.adds for p in patched.object_patches.values()]
    assert adds and all(a._cast for a in adds)
    comfy.model_management.unload_all_models()
    assert all(not a._cast for a in adds)


@pytest.mark.parametrize("variant", ["bare peft keys", "base_model.model. keys", "kohya keys"])
def test_other_key_formats(variant, loras):
    model = tiny_flux()
    lora = official_lora(model, FLUX_TARGETS)
    reference_name = loras("official.safetensors", lora)
    if variant == "bare peft keys":
        lora = {k[len("transformer."):]: v for k, v in lora.items()}
    elif variant == "base_model.model. keys":
        lora = {"base_model.model." + k[len("transformer."):]: v for k, v in lora.items()}
    else:  # kohya names for the same layers, with alpha = rank
        kohya = {}
        for k, v in lora.items():
            stem = k.rsplit(".lora_", 1)[0][len("transformer."):]
            stem = "lora_transformer_" + stem.replace(".", "_")
            kohya[f"{stem}.lora_down.weight" if ".lora_A." in k else f"{stem}.lora_up.weight"] = v
            kohya[f"{stem}.alpha"] = torch.tensor(4.0)
        lora = kohya
    name = loras("variant.safetensors", lora)
    assert torch.equal(run(lora_loader(model, name, active="every step")),
                       run(lora_loader(model, reference_name, active="every step")))


def test_lora_alpha_from_safetensors_metadata(loras):
    """PEFT scales by lora_alpha / rank; the official files carry it in the header, not as tensors."""
    model = tiny_flux()
    lora = official_lora(model, FLUX_TARGETS, rank=4)
    metadata = {"lora_adapter_metadata": json.dumps({"transformer.r": 4, "transformer.lora_alpha": 2})}
    ours = run(lora_loader(model, loras("meta.safetensors", lora, metadata), active="every step"))
    with_tensors = {**lora, **{k.rsplit(".lora_", 1)[0] + ".alpha": torch.tensor(2.0) for k in lora}}
    reference = run(merged_lora(model, loras("alpha.safetensors", with_tensors)))
    assert (ours - reference).abs().max() < 1e-4


def test_with_taca_but_no_taca_node_stays_off_and_warns_once_per_run(loras, caplog):
    # A bypassed TACA node leaves the LoRA's 'with TACA' window empty: the run is the
    # model without TACA and without the LoRA, to the bit.
    model = tiny_sd35_medium()
    patched = lora_loader(model, loras("taca.safetensors", official_lora(model, SD3_TARGETS)))
    with caplog.at_level(logging.WARNING):
        out = run(patched, steps=4)
    assert torch.equal(out, run(model, steps=4))
    warnings = [r for r in caplog.records if "no TACA node" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_lora_for_another_architecture(loras):
    """A FLUX.1 LoRA (width 3072) on an SD3 model: the key names partly overlap, the sizes do not."""
    flux = tiny_flux()
    wide = {k: torch.zeros(v.shape[0], 3072) if ".lora_A." in k else torch.zeros(3072, v.shape[1])
            for k, v in official_lora(flux, FLUX_TARGETS).items()}
    with pytest.raises(ValueError) as error:
        lora_loader(tiny_sd3(), loras("taca_flux.safetensors", wide))
    message = str(error.value)
    assert "taca_flux.safetensors" in message and "FLUX.1" in message and "3072" in message
    # The model is named once, as what is connected; the LoRA is described by its own keys.
    connected = "SD3 / SD3.5 (Medium, Large)"  # the family's name in the README's table
    assert message.startswith("TACA LoRA Loader: ") and f"the model connected, {connected}:" in message
    diagnosis = message.split(" Use the TACA LoRA")[0]  # the advice after it names the published LoRAs
    assert diagnosis.count("SD3") == connected.count("SD3"), message


def test_lora_with_no_matching_layer(loras):
    sd15_lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
                 "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4)}
    with pytest.raises(ValueError) as error:
        lora_loader(tiny_sd35_medium(), loras("sd15.safetensors", sd15_lora))
    message = str(error.value)
    assert "sd15.safetensors" in message and "SD1.5" in message and "SD3" in message


def test_corrupt_file(loras):
    (loras.path / "broken.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="^TACA LoRA Loader: could not read LoRA file 'broken.safetensors'"):
        lora_loader(tiny_sd35_medium(), "broken.safetensors")


def test_partial_map_warns_with_counts(loras, caplog):
    model = tiny_sd35_medium()
    lora = official_lora(model, SD3_TARGETS)
    n_layers = len(lora) // 2
    lora["transformer.not_a_block.proj.lora_A.weight"] = torch.zeros(4, 8)
    lora["transformer.not_a_block.proj.lora_B.weight"] = torch.zeros(8, 4)
    with caplog.at_level(logging.WARNING):
        lora_loader(model, loras("partial.safetensors", lora))
    assert f"{n_layers} of {n_layers + 1} LoRA layers map" in caplog.text


def test_node_schema():
    schema = nodes.NODE_CLASS_MAPPINGS["TACALoraLoader"].GET_SCHEMA()
    inputs = {i.id: i for i in schema.inputs}
    assert list(inputs) == ["model", "lora_name", "strength", "active"]
    assert inputs["strength"].default == 1.0
    assert inputs["active"].default == "with TACA"
    assert all(i.tooltip for i in schema.inputs)


def test_lora_on_a_layer_that_is_not_linear(loras):
    """HiDream's MoE gate weight is in ComfyUI's key map, but no Linear layer computes with it."""
    from tiny_families import hidream

    model = hidream.build()
    (gate,) = [k for k in model.model.state_dict() if k.endswith("double_stream_blocks.0.block.ff_i.gate.weight")]
    stem = gate[:-len(".weight")]
    rows, cols = model.model.state_dict()[gate].shape
    lora = {f"{stem}.lora_A.weight": torch.zeros(2, cols), f"{stem}.lora_B.weight": torch.zeros(rows, 2)}
    with pytest.raises(ValueError) as error:
        lora_loader(model, loras("gate.safetensors", lora))
    assert "gate.safetensors" in str(error.value) and "not the weight of a Linear layer" in str(error.value)
