"""Bad LoRA files through the real server: a clear error that names the file, before sampling,
and a server that runs the next prompt as if nothing happened.

The shared server (comfy_server.py) runs SD3.5-Medium with the TACA LoRA Loader and TACA; the
bad files are written into its loras folder at test time, from the good TACA LoRA files:
cut off (in its tensors and in its header), holding NaN and infinity, trained for another
model (the FLUX.1 LoRA), and with one layer of the wrong size. Each prompt is followed over
the websocket: the error is the loader's, the sampler never starts, and the same graph with
the good file then runs.
"""

import time

import pytest
import safetensors.torch
import torch

import model_files
import comfy_server  # noqa: F401  first: it puts tools/ on the path
from comfy_http import ComfyError

GOOD = "taca_sd3.5-medium_r64.safetensors"
SAMPLER = "8"


def graph(lora_name: str, seed: int) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}},
        "2": {"class_type": model_files.SUBSTITUTE[0], "inputs": dict(zip(("clip_name", "type", "device"), model_files.SUBSTITUTE[1]))},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cube to the left of a blue sphere", "clip": ["2", 0]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "5": {"class_type": "TACALoraLoader", "inputs": {"model": ["1", 0], "lora_name": lora_name, "strength": 1.0, "active": "with TACA"}},
        "6": {"class_type": "TACA", "inputs": {"model": ["5", 0], "gamma": 1.2, "threshold": 970.0}},
        "7": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        SAMPLER: {"class_type": "KSampler", "inputs": {
            "model": ["6", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["7", 0], "seed": seed,
            "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
        "9": {"class_type": "SaveLatent", "inputs": {"samples": [SAMPLER, 0], "filename_prefix": "tests/lora_files"}},
    }


def loras(server):
    return server.base / "models" / "loras"


def good_lora(server) -> dict:
    return safetensors.torch.load_file(str((loras(server) / GOOD).resolve()))


def failed_run(server, lora_name: str, seed: int):
    """Run the graph with a bad file: its execution_error message, the websocket's event types, its /history entry."""
    events = []
    with pytest.raises(ComfyError):
        server.client.run(graph(lora_name, seed), on_event=lambda kind, data: events.append((kind, data)), timeout=600)
    (prompt_id,) = {data["prompt_id"] for _, data in events if "prompt_id" in data}
    entry = None
    for _ in range(120):  # the history is written just after the error message
        entry = server.client.history(prompt_id)
        if entry is not None and entry["status"].get("completed") is not None:
            break
        time.sleep(0.25)
    assert entry["status"]["status_str"] == "error"
    (error,) = [data for kind, data in entry["status"]["messages"] if kind == "execution_error"]
    return error, [kind for kind, _ in events], entry


def assert_stops_at_the_loader_and_the_server_runs_on(server, name: str, seed: int, *phrases):
    error, events, entry = failed_run(server, name, seed)
    message = error["exception_message"]
    assert error["node_type"] == "TACALoraLoader" and error["node_id"] == "5", error
    assert message.startswith("TACA LoRA Loader: ") and f"'{name}'" in message, message
    for phrase in phrases:
        assert phrase in message, message
    # Before sampling: the sampler never ran, no step was reported, nothing was saved.
    assert SAMPLER not in error["executed"] and "progress" not in events and not entry["outputs"], (error["executed"], events)
    # The server is fine: the same graph with the good file runs.
    done = server.run(graph(GOOD, seed))
    assert done["status"]["status_str"] == "success" and done["outputs"]["9"]["latents"]
    return message


def test_a_cut_off_file(server):
    whole = (loras(server) / GOOD).resolve().read_bytes()
    (loras(server) / "cut_off.safetensors").write_bytes(whole[:len(whole) * 3 // 5])
    message = assert_stops_at_the_loader_and_the_server_runs_on(server, "cut_off.safetensors", 11, "is cut off",
                                                                f"its header lists {len(whole):,}", "Download it again")
    assert f"holds {len(whole) * 3 // 5:,} bytes" in message


def test_a_file_cut_off_inside_its_header(server):
    whole = (loras(server) / GOOD).resolve().read_bytes()
    (loras(server) / "cut_in_header.safetensors").write_bytes(whole[:100])
    assert_stops_at_the_loader_and_the_server_runs_on(server, "cut_in_header.safetensors", 12,
                                                      "is cut off inside its header", "Download it again")


def test_a_file_holding_nan_and_infinity(server):
    lora = good_lora(server)
    keys = sorted(lora)
    lora[keys[0]][0, 0] = float("nan")
    lora[keys[3]][1, 1] = float("inf")
    lora[keys[3]][2, 0] = -float("inf")
    safetensors.torch.save_file(lora, str(loras(server) / "not_finite.safetensors"))
    assert_stops_at_the_loader_and_the_server_runs_on(server, "not_finite.safetensors", 13,
                                                      f"2 of its {len(lora)} tensors contain NaN or infinity",
                                                      f"'{keys[0]}': 1 NaN, 0 infinite", "download it again")


def test_a_lora_for_another_model(server):
    # The FLUX.1 TACA LoRA on SD3.5-Medium: some key names map, their widths do not.
    message = assert_stops_at_the_loader_and_the_server_runs_on(
        server, "taca_flux1-dev_r64.safetensors", 14, "does not fit the model connected, SD3 / SD3.5", "FLUX.1",
        "the LoRA's input width is 3072")
    assert "use the one trained for the model connected" in message


def test_a_lora_with_one_layer_of_the_wrong_size(server):
    # One lora_B with fewer rows than its layer has outputs: no error would come from the matrix
    # product itself, the rows would silently land on part of the layer.
    lora = good_lora(server)
    (key,) = [k for k in sorted(lora) if k.endswith("transformer_blocks.0.attn.to_q.lora_B.weight")]
    rows = lora[key].shape[0]
    lora[key] = lora[key][:rows - 8].clone()
    safetensors.torch.save_file(lora, str(loras(server) / "one_layer_wrong.safetensors"))
    assert_stops_at_the_loader_and_the_server_runs_on(
        server, "one_layer_wrong.safetensors", 15, "1 of its", f"the LoRA's output width is {rows - 8}",
        f"gives {rows}", "check that the file is not damaged")


def test_a_lora_whose_ranks_disagree(server):
    lora = good_lora(server)
    (key,) = [k for k in sorted(lora) if k.endswith("transformer_blocks.0.attn.to_k.lora_A.weight")]
    lora[key] = torch.cat([lora[key], lora[key][:1]])  # rank 5 against lora_B's 4
    safetensors.torch.save_file(lora, str(loras(server) / "ranks_disagree.safetensors"))
    assert_stops_at_the_loader_and_the_server_runs_on(server, "ranks_disagree.safetensors", 16,
                                                      "its lora_A has rank 5 and its lora_B rank 4")
