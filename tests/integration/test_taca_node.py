"""The TACA node as ComfyUI sees it: registration, schema, errors, and a run through ComfyUI's executor."""

import asyncio
import inspect

import pytest
import safetensors.torch
import torch

import comfy.sd
import comfy.utils
import execution
import folder_paths
import nodes

from tiny_models import build_from_config, conditioning, empty_latent, sample, tiny_flux, tiny_sd3, tiny_sd15, tiny_wan


def test_registered_with_its_inputs_and_tooltips(taca_node):
    assert nodes.NODE_CLASS_MAPPINGS["TACA"] is taca_node
    assert "TACA" in nodes.NODE_DISPLAY_NAME_MAPPINGS["TACA"]
    info = taca_node.GET_NODE_INFO_V1()  # what ComfyUI's /object_info serves the frontend
    required = info["input"]["required"]

    assert info["input_order"]["required"] == ["model", "gamma", "threshold"]
    assert required["model"][0] == "MODEL" and info["output"] == ["MODEL"]
    assert required["gamma"][1]["default"] == 1.2  # the paper's γ₀
    assert required["threshold"][1]["default"] == 970.0  # the paper's t_thresh
    assert required["threshold"][1]["min"] == 0.0 and required["threshold"][1]["max"] == 1000.0
    for name, (_, options) in required.items():
        assert options.get("tooltip"), f"input {name} has no tooltip"
    assert info["description"]


@pytest.mark.parametrize("builder,loaded", [(tiny_sd15, "SD1.5"), (tiny_wan, "Wan 2.1")], ids=["sd1.5-unet", "wan2.1-dit"])
def test_cross_attention_model_is_refused_naming_it_and_why(builder, loaded, taca):
    with pytest.raises(ValueError) as error:
        taca(builder(), 1.2, 970.0)
    message = str(error.value)
    assert loaded in message and "cross-attention" in message  # what the user loaded, and why it cannot work
    assert "FLUX.1" in message and "SD3" in message and "Qwen-Image" in message  # what is supported
    assert "bypass" in message  # what to do


def test_joint_model_beyond_the_attention_override_is_refused_saying_why(taca):
    from tiny_families import ernie_image

    if not ernie_image.available():
        pytest.skip("ERNIE-Image: not in this ComfyUI")
    with pytest.raises(ValueError) as error:
        taca(ernie_image.build(), 1.2, 970.0)
    assert "ERNIE-Image" in str(error.value) and "attention override" in str(error.value)


def test_stable_cascade_is_refused_saying_why(taca):
    # Its image queries attend over image and text keys joined: not cross-attention, and not
    # the MM-DiT layout TACA covers. The error must say that, not call it cross-attention.
    import comfy.supported_models

    model = build_from_config(comfy.supported_models.Stable_Cascade_C, {
        "stable_cascade_stage": "c", "c_in": 16, "c_out": 16, "c_r": 16, "c_cond": 32, "c_hidden": [32, 32],
        "nhead": [2, 2], "blocks": [[1, 1], [1, 1]], "block_repeat": [[1, 1], [1, 1]], "level_config": ["CTA", "CTA"],
        "c_clip_text": 32, "c_clip_text_pooled": 32, "c_clip_img": 32, "c_clip_seq": 1, "switch_level": [False],
    }, seed=0)
    with pytest.raises(ValueError) as error:
        taca(model, 1.2, 970.0)
    message = str(error.value)
    assert "Stable Cascade" in message and "text keys joined" in message and "cross-attention" not in message
    assert "bypass" in message


def test_a_new_family_that_subclasses_a_known_one_is_refused(taca):
    # A future model whose configuration subclasses FLUX.1's is not FLUX.1: TACA cannot know
    # where its text sits, so it refuses it instead of treating it as FLUX.1.
    import comfy.supported_models

    class FutureFlux(comfy.supported_models.Flux):
        pass

    model = tiny_flux()
    model.model.model_config.__class__ = FutureFlux
    with pytest.raises(ValueError, match="FutureFlux"):
        taca(model, 1.2, 970.0)


class RandomConditioning:
    """Stands in for CLIPTextEncode, so the graph needs no text encoder: seeded random conditioning."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "tokens": ("INT", {"default": 77}), "seed": ("INT", {"default": 0})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "testing"

    def encode(self, model, tokens, seed):
        return (conditioning(model, tokens, seed),)


class Messages:
    """The executor's outlet for status messages, which the web server provides in the app."""

    client_id = None
    last_node_id = None
    sockets_metadata = {}

    def __init__(self):
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data))


def graph(unet_name, gamma, threshold):
    sampler = {"seed": 0, "steps": 4, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet_name, "weight_dtype": "default"}},
        "2": {"class_type": "TACA", "inputs": {"model": ["1", 0], "gamma": gamma, "threshold": threshold}},
        "3": {"class_type": "RandomConditioning", "inputs": {"model": ["1", 0], "tokens": 77, "seed": 1}},
        "4": {"class_type": "RandomConditioning", "inputs": {"model": ["1", 0], "tokens": 77, "seed": 2}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0], **sampler,
        }},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "taca"}},
    }


@pytest.fixture
def host(tmp_path, monkeypatch):
    """Folders for this test's model file and outputs, and the stand-in text encoder node registered."""
    models, output = tmp_path / "diffusion_models", tmp_path / "output"
    models.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusion_models", ([str(models)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "output_directory", str(output))
    monkeypatch.setitem(nodes.NODE_CLASS_MAPPINGS, "RandomConditioning", RandomConditioning)
    return models, output


def prompt_executor():
    """ComfyUI's executor with its classic cache; 0.33 also needs cache_args, as main.py gives them."""
    takes = inspect.signature(execution.PromptExecutor).parameters
    if "cache_args" not in takes:
        return execution.PromptExecutor(Messages())
    return execution.PromptExecutor(Messages(), cache_type=execution.CacheType.CLASSIC,
                                    cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})


def validate(prompt):
    return asyncio.run(execution.validate_prompt("taca-test", prompt, None))


def test_runs_in_a_comfyui_graph(host, taca):
    models, output = host
    model_file = models / "tiny_sd3.safetensors"
    safetensors.torch.save_file(tiny_sd3(seed=0).model.diffusion_model.state_dict(), str(model_file))
    prompt = graph(model_file.name, gamma=1.3, threshold=800.0)

    valid, error, outputs, node_errors = validate(prompt)
    assert valid, (error, node_errors)
    executor = prompt_executor()
    executor.execute(prompt, "taca-test", {}, outputs)
    assert executor.success, executor.status_messages
    (saved,) = output.rglob("*.latent")
    result = safetensors.torch.load_file(str(saved))["latent_tensor"]

    # The same run in-process: the file through ComfyUI's loader, the node, ComfyUI's sampler.
    model = comfy.sd.load_diffusion_model_state_dict(comfy.utils.load_torch_file(str(model_file)))
    positive, negative = conditioning(model, 77, seed=1), conditioning(model, 77, seed=2)
    latent = empty_latent(48 // 8, 64 // 8)  # KSampler widens EmptyLatentImage's 4 channels to the model's 16
    expected = sample(taca(model, 1.3, 800.0), positive, negative, latent, steps=4)
    assert torch.equal(result, expected)
    assert not torch.allclose(result, sample(model, positive, negative, latent, steps=4), atol=1e-2, rtol=0)


@pytest.mark.parametrize("name,value", [("gamma", 9.0), ("threshold", 1200.0)])
def test_graph_with_an_input_out_of_range_is_rejected_before_it_runs(host, name, value):
    models, _ = host
    safetensors.torch.save_file(tiny_sd3(seed=0).model.diffusion_model.state_dict(), str(models / "tiny.safetensors"))
    prompt = graph("tiny.safetensors", gamma=1.2, threshold=970.0)
    prompt["2"]["inputs"][name] = value

    valid, _, _, node_errors = validate(prompt)
    assert not valid
    assert [e["extra_info"]["input_name"] for e in node_errors["2"]["errors"]] == [name]


@pytest.mark.parametrize("name,value", [("gamma", float("nan")), ("gamma", float("inf")), ("threshold", float("nan")),
                                        ("gamma", -0.5), ("threshold", 1200.0), ("gamma", "1.2")])
def test_bad_numbers_are_refused_naming_the_input_and_its_range(name, value, taca):
    # ComfyUI's validation passes NaN (every comparison with it is false), and a prompt sent
    # through the API reaches the node with whatever it carries.
    inputs = {"gamma": 1.2, "threshold": 970.0, name: value}
    with pytest.raises(ValueError) as error:
        taca(tiny_sd3(), inputs["gamma"], inputs["threshold"])
    assert f"'{name}'" in str(error.value) and "finite number from" in str(error.value)


def test_a_nan_gamma_stops_the_graph_with_that_error(host):
    models, _ = host
    safetensors.torch.save_file(tiny_sd3(seed=0).model.diffusion_model.state_dict(), str(models / "tiny.safetensors"))
    prompt = graph("tiny.safetensors", gamma=float("nan"), threshold=970.0)
    valid, error, outputs, node_errors = validate(prompt)
    assert valid, (error, node_errors)  # ComfyUI's own validation lets NaN through
    executor = prompt_executor()
    executor.execute(prompt, "taca-test", {}, outputs)
    assert not executor.success
    errors = [data for event, data in executor.status_messages if event == "execution_error"]
    assert errors and errors[0]["node_type"] == "TACA" and "'gamma' is nan" in errors[0]["exception_message"]


@pytest.mark.parametrize("name,value,expected", [("active", "Every Step", "'with TACA', 'every step'"),
                                                 ("strength", float("nan"), "finite number from -10.0 to 10.0")])
def test_lora_loader_refuses_bad_inputs_naming_them(name, value, expected, loras):
    from tiny_loras import SD3_TARGETS, official_lora

    model = tiny_sd3()
    inputs = {"lora_name": loras("taca.safetensors", official_lora(model, SD3_TARGETS)), "strength": 1.0,
              "active": "with TACA", name: value}
    with pytest.raises(ValueError) as error:
        nodes.NODE_CLASS_MAPPINGS["TACALoraLoader"].execute(model=model, **inputs)
    assert f"'{name}'" in str(error.value) and expected in str(error.value)
