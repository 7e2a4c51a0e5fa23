"""The shipped workflows (workflows/*.json) against a real ComfyUI server with this pack loaded.

Static: each file is a UI-format workflow whose node types, links, widget values and metadata
agree with the server's /object_info. Execution: each one, converted to the API format, runs
through the server's HTTP API with tiny model files (model_files.py) at 64×64 and two steps;
the files themselves keep the paper's 1024² and 30 steps. T5-XXL is swapped for CLIP-L, see
model_files.SUBSTITUTED_LOADERS. The headless runner, tools/taca_compare.py, runs too.
"""

import io
import json
import os
import re
import subprocess
import sys
import tomllib

import numpy as np
import pytest
import torch
from PIL import Image

import model_files
from comfy_server import BALANCE, COMFYUI, PACK, PACK_FOLDER, SERVER_ARGS, SHIPPED, SIDE_BY_SIDE, TEST_SIZE, TEST_STEPS, WORKFLOWS, load_workflow
from comfy_http import ComfyClient
from taca_compare import apply_options, labeled, parse_args, save_images, stitch_labels
from workflow_api import CONTROL_AFTER_GENERATE, FRONTEND_ONLY, WorkflowError, combo_options, input_spec, to_api_prompt, widget_values

PYPROJECT = tomllib.loads((PACK / "pyproject.toml").read_text())["project"]


def version(text: str) -> tuple:
    return tuple(int(part) for part in text.split("."))


# pyproject's [tool.comfy] requires-comfyui, ">=0.3.64"
REQUIRES_COMFYUI = version(tomllib.loads((PACK / "pyproject.toml").read_text())["tool"]["comfy"]["requires-comfyui"].lstrip(">="))
CORE_MODULES = ("nodes", "comfy_extras", "comfy_api_nodes")
TACA_NODES = ("TACA", "TACALoraLoader")
# Where each loader's files go, as ComfyUI's model folders name them.
MODEL_FOLDERS = {
    "UNETLoader": "diffusion_models", "DualCLIPLoader": "text_encoders", "TripleCLIPLoader": "text_encoders",
    "CLIPLoader": "text_encoders", "VAELoader": "vae", "CheckpointLoaderSimple": "checkpoints", "TACALoraLoader": "loras",
}
TACA_LORA_PAGE = "huggingface.co/ldiex/TACA"


def by_title(prompt: dict, title: str) -> str:
    (node_id,) = [i for i, node in prompt.items() if node["_meta"]["title"] == title]
    return node_id


def of_type(prompt: dict, class_type: str) -> list:
    return [i for i, node in prompt.items() if node["class_type"] == class_type]


def image_saver(prompt: dict) -> str:
    """The Save Image node of the decoded samples, stitched or not (the balance workflow saves its plot too)."""
    (save,) = [i for i in of_type(prompt, "SaveImage")
               if prompt[prompt[i]["inputs"]["images"][0]]["class_type"] in ("VAEDecode", "ImageStitch")]
    return save


def model_file_inputs(node: dict, values: dict) -> dict:
    return {k: v for k, v in values.items() if isinstance(v, str) and v.endswith(".safetensors")} if node["type"] in MODEL_FOLDERS else {}


# --- the files ------------------------------------------------------------------------

def test_the_five_workflows_ship_with_thumbnails():
    assert SHIPPED == sorted(["taca_flux_dev", SIDE_BY_SIDE, BALANCE, "taca_sd35_medium", "taca_sd35_large"])
    for name in SHIPPED:
        # ComfyUI's template browser shows <name>.jpg for a custom node pack's template <name>.json.
        thumbnail = WORKFLOWS / f"{name}.jpg"
        assert thumbnail.is_file(), f"{thumbnail} is missing: run the browser test with TACA_UPDATE_SCREENSHOTS=1"
        assert Image.open(thumbnail).format == "JPEG"


@pytest.mark.parametrize("name", SHIPPED)
def test_ui_format(name):
    workflow = load_workflow(name)
    assert isinstance(workflow["version"], (int, float)) and {"nodes", "links", "last_node_id", "last_link_id"} <= set(workflow)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]) and max(nodes) <= workflow["last_node_id"]
    links = {link[0]: link for link in workflow["links"]}
    assert len(links) == len(workflow["links"]) and max(links) <= workflow["last_link_id"]
    for node in workflow["nodes"]:
        assert {"id", "type", "pos", "size", "mode", "properties"} <= set(node), node["id"]
        assert isinstance(node.get("widgets_values", []), list), node["id"]  # the frontend omits it without widgets
    for link_id, origin, slot, target, target_slot, type_ in workflow["links"]:
        # Both ends of every link know it, at the slot the link names.
        assert link_id in nodes[origin]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert nodes[origin]["outputs"][slot]["type"] == nodes[target]["inputs"][target_slot]["type"] == type_
    for node in workflow["nodes"]:
        for slot in node.get("inputs", []):
            assert slot.get("link") is None or slot["link"] in links, f"node {node['id']} input {slot['name']}: dangling link"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_node_type_exists_in_comfyui(server, name):
    missing = {node["type"] for node in load_workflow(name)["nodes"]} - set(server.object_info) - set(FRONTEND_ONLY)
    assert not missing, f"not in /object_info of ComfyUI {server.comfyui_version} with the pack loaded: {missing}"


@pytest.mark.parametrize("name", SHIPPED)
def test_links_connect_matching_types(server, name):
    workflow = load_workflow(name)
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for link_id, origin, slot, target, target_slot, type_ in workflow["links"]:
        produced = server.object_info[nodes[origin]["type"]]["output"][slot]
        target_def = server.object_info[nodes[target]["type"]]
        expected, _ = input_spec(target_def, nodes[target]["inputs"][target_slot]["name"])
        assert produced == expected == type_, f"link {link_id}: {nodes[origin]['type']} gives {produced}, {nodes[target]['type']} takes {expected}"


@pytest.mark.parametrize("name", SHIPPED)
def test_widget_values_are_in_range_and_in_order(server, name):
    for node in load_workflow(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        node_def = server.object_info[node["type"]]
        values = widget_values(node, node_def)  # raises when the count does not fit the node's widgets
        files = model_file_inputs(node, values)
        for key, value in values.items():
            where = f"{name}: node {node['id']} ({node['type']}) {key} = {value!r}"
            if key.endswith(".control_after_generate"):
                assert value in CONTROL_AFTER_GENERATE, where
                continue
            type_, options = input_spec(node_def, key)
            if type_ in ("INT", "FLOAT"):
                assert isinstance(value, (int, float)) and not isinstance(value, bool), where
                assert type_ == "FLOAT" or float(value).is_integer(), where
                assert options.get("min", -np.inf) <= value <= options.get("max", np.inf), where
            elif type_ == "BOOLEAN":
                assert isinstance(value, bool), where
            elif type_ == "STRING":
                assert isinstance(value, str), where
            elif key in files and value in model_files.NOT_BUILT:
                continue  # a file the test server lacks on purpose; its download entry is checked below
            else:
                assert value in combo_options(type_, options), where


@pytest.mark.parametrize("name", SHIPPED)
def test_every_node_carries_its_pack_and_version(server, name):
    for node in load_workflow(name)["nodes"]:
        properties = node["properties"]
        if node["type"] in FRONTEND_ONLY:
            continue
        module = server.object_info[node["type"]]["python_module"]
        where = f"{name}: node {node['id']} ({node['type']})"
        if module.split(".")[0] in CORE_MODULES:
            # Saved with a ComfyUI the pack supports, and no newer than the one running it.
            assert properties.get("cnr_id") == "comfy-core", where
            assert REQUIRES_COMFYUI <= version(properties.get("ver")) <= version(server.comfyui_version), where
        else:
            assert module == f"custom_nodes.{PACK_FOLDER}", f"{node['type']} comes from {module}"
            assert (properties.get("cnr_id"), properties.get("ver")) == (PYPROJECT["name"], PYPROJECT["version"]), where
        assert properties.get("Node name for S&R", node["type"]) == node["type"]


@pytest.mark.parametrize("name", SHIPPED)
def test_model_loaders_offer_their_downloads(server, name):
    for node in load_workflow(name)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        files = model_file_inputs(node, widget_values(node, server.object_info[node["type"]]))
        if not files:
            continue
        models = node["properties"].get("models")
        if node["type"] == "TACALoraLoader":
            # The LoRA repository's file names are not verified, so no download is offered for them.
            assert models is None, f"{name}: the TACA LoRA loader must not offer a download"
            continue
        assert sorted(m["name"] for m in models) == sorted(files.values()), f"{name}: node {node['id']} ({node['type']})"
        for m in models:
            assert m["directory"] == MODEL_FOLDERS[node["type"]], m
            assert re.fullmatch(r"https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/main/(\S+/)?" + re.escape(m["name"]), m["url"]), m


@pytest.mark.parametrize("name", SHIPPED)
def test_paper_defaults(server, name):
    prompt = to_api_prompt(load_workflow(name), server.object_info)
    classes = {node["class_type"] for node in prompt.values()}
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "TACA":
            assert (inputs["gamma"], inputs["threshold"]) == (1.2, 970)
        if node["class_type"] == "TACALoraLoader":
            assert (inputs["strength"], inputs["active"]) == (1.0, "with TACA")
        if "steps" in inputs:
            assert inputs["steps"] == 30
        if node["class_type"] == "EmptySD3LatentImage":
            assert (inputs["width"], inputs["height"]) == (1024, 1024)
    assert "TACA" in classes
    assert ("TACALoraLoader" in classes) == (name != "taca_sd35_large")  # no TACA LoRA exists for SD3.5-Large
    if "flux" in name:
        assert {"UNETLoader", "DualCLIPLoader", "VAELoader", "FluxGuidance"} <= classes
        (te,) = [node["inputs"] for node in prompt.values() if node["class_type"] == "DualCLIPLoader"]
        assert sorted([te["clip_name1"], te["clip_name2"]]) == ["clip_l.safetensors", "t5xxl_fp16.safetensors"] and te["type"] == "flux"


@pytest.mark.parametrize("name", SHIPPED)
def test_a_note_explains_gamma_threshold_and_what_to_try(name):
    workflow = load_workflow(name)
    (text,) = [node["widgets_values"][0] for node in workflow["nodes"] if node["type"] == "MarkdownNote"]
    for phrase in ("gamma", "1.2", "threshold", "970", "Try"):
        assert phrase in text, phrase
    if any(node["type"] == "TACALoraLoader" for node in workflow["nodes"]):
        assert TACA_LORA_PAGE in text and "rank 16 or 64" in text


# --- execution ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", [n for n in SHIPPED if n not in (SIDE_BY_SIDE, BALANCE)])  # two branches: below
def test_workflow_runs_and_its_taca_nodes_change_the_image(server, name):
    workflow = load_workflow(name)
    prompt = server.small_run(workflow)
    save = image_saver(prompt)
    image = server.image(server.run(prompt), save)
    assert image.shape == (TEST_SIZE, TEST_SIZE, 3)

    bypassed = server.small_run(workflow, bypass=TACA_NODES)
    assert not of_type(bypassed, "TACA")
    baseline = server.image(server.run(bypassed), save)
    assert np.abs(image.astype(int) - baseline).max() > 0, "the TACA nodes are not on the sampled path"


def side_by_side_run(server, bypass=()):
    """The side-by-side workflow's stitched image and, through added SaveLatent nodes, each branch's latent."""
    prompt = server.small_run(load_workflow(SIDE_BY_SIDE), bypass=bypass)
    samplers = {branch: by_title(prompt, f"Sampler: {branch}") for branch in ("baseline", "TACA")}
    for branch, sampler in samplers.items():
        prompt[f"latent_{branch}"] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [sampler, 0], "filename_prefix": f"tests/{branch}"},
            "_meta": {"title": f"Save latent: {branch}"},
        }
    entry = server.run(prompt)
    (save,) = of_type(prompt, "SaveImage")
    return server.image(entry, save), server.latent(entry, "latent_baseline"), server.latent(entry, "latent_TACA")


def test_side_by_side_baseline_equals_an_unpatched_run_and_taca_differs(server):
    stitched, baseline, taca = side_by_side_run(server)
    server.forget_results()  # or ComfyUI would hand back its cached baseline branch
    unpatched_stitched, unpatched, unpatched_right = side_by_side_run(server, bypass=TACA_NODES)

    assert torch.equal(baseline, unpatched), "the baseline branch is not the unpatched model's result"
    assert torch.equal(unpatched_right, unpatched)  # with TACA bypassed, both branches are the baseline
    assert (taca - baseline).abs().max() > 1e-3, "the TACA branch equals the baseline"

    (stitch,) = [node for node in load_workflow(SIDE_BY_SIDE)["nodes"] if node["type"] == "ImageStitch"]
    gap = stitch["widgets_values"][2]  # direction, match_image_size, spacing_width, spacing_color
    assert stitched.shape == (TEST_SIZE, 2 * TEST_SIZE + gap, 3)
    left, right = stitched[:, :TEST_SIZE], stitched[:, TEST_SIZE + gap:]
    assert np.array_equal(left, unpatched_stitched[:, :TEST_SIZE]), "baseline | TACA: the left image is not the baseline"
    assert np.abs(right.astype(int) - left).max() > 0, "baseline | TACA: the two images are the same"


def test_side_by_side_labels_with_the_core_text_node_where_comfyui_has_one(server):
    # What the README suggests on ComfyUI 0.33: a Draw Text Overlay after each Decode node.
    # The shipped workflow cannot: ComfyUI 0.3.64 has no core node that draws text.
    if "TextOverlay" not in server.object_info:
        pytest.skip(f"ComfyUI {server.comfyui_version} has no core node that draws text on an image (TextOverlay)")
    assert server.object_info["TextOverlay"]["python_module"].split(".")[0] in CORE_MODULES
    prompt = server.small_run(load_workflow(SIDE_BY_SIDE))
    (stitch,) = of_type(prompt, "ImageStitch")
    (save,) = of_type(prompt, "SaveImage")
    plain = server.image(server.run(prompt), save)
    for slot, text in (("image1", "Baseline"), ("image2", "TACA")):
        prompt[f"label_{slot}"] = {
            "class_type": "TextOverlay",
            "inputs": {"images": prompt[stitch]["inputs"][slot], "text": text, "font_size": 20.0, "color": "#ffffff",
                       "position": "top", "align": "center", "outline": True},
            "_meta": {"title": f"Label: {text}"},
        }
        prompt[stitch]["inputs"][slot] = [f"label_{slot}", 0]
    labeled_image = server.image(server.run(prompt), save)
    assert labeled_image.shape == plain.shape
    gap = plain.shape[1] - 2 * TEST_SIZE
    for half in (slice(0, TEST_SIZE), slice(TEST_SIZE + gap, None)):
        assert not np.array_equal(labeled_image[:TEST_SIZE // 3, half], plain[:TEST_SIZE // 3, half])  # the label, on top
        assert np.array_equal(labeled_image[TEST_SIZE // 2:, half], plain[TEST_SIZE // 2:, half])  # the image below it


def with_saved_latents(prompt: dict) -> dict:
    """The prompt with a SaveLatent after each of its samplers ('Sampler: baseline', 'Sampler: TACA')."""
    for branch in ("baseline", "TACA"):
        prompt[f"latent_{branch}"] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [by_title(prompt, f"Sampler: {branch}"), 0], "filename_prefix": f"tests/{branch}"},
            "_meta": {"title": f"Save latent: {branch}"},
        }
    return prompt


def balance_run(server, bypass=()):
    """The balance workflow's stitched image (baseline | TACA), plot, newest JSON of numbers and each run's latent."""
    prompt = with_saved_latents(server.small_run(load_workflow(BALANCE), bypass=bypass))
    entry = server.run(prompt)
    (plot_saver,) = [i for i in of_type(prompt, "SaveImage") if i != image_saver(prompt)]
    (numbers,) = (server.base / "output" / "TACA").glob(f"balance_{len(list(server.base.glob('output/TACA/balance_*.json'))):05}_.json")
    latents = {branch: server.latent(entry, f"latent_{branch}") for branch in ("baseline", "TACA")}
    return server.image(entry, image_saver(prompt)), server.image(entry, plot_saver), json.loads(numbers.read_text()), latents


def test_balance_workflow_plots_the_taca_run_against_a_true_baseline(server):
    # One probe before TACA and its LoRA records two runs of one seed: the model as it is and
    # the model with TACA and the LoRA. The plot compares them, and says so.
    stitched, plot, table, latents = balance_run(server)
    assert plot.shape[0] > 4 * TEST_SIZE and plot.shape[1] > 2 * plot.shape[0] and plot.std() > 20
    assert table["family"].startswith("FLUX.1")
    assert table["taca"] == {"gamma0": 1.2, "schedule": "step", "threshold": 970, "blocks": "all",
                             "branches": ["cond", "uncond"], "description": "γ₀ 1.2, threshold 970"}
    assert table["taca_lora"] == "with TACA"
    assert table["compared_with"] == "baseline run"
    assert table["baseline"]["taca"] is None and table["baseline"]["taca_lora"] is None
    assert "against the baseline run, sampled with no TACA node and no TACA LoRA" in table["comparison"]
    assert len(table["timesteps"]) == TEST_STEPS and table["in_window"] == [True, False]
    assert list(table["branches"]) == ["cond"]  # FLUX at CFG 1: the negative branch never runs
    cond = table["branches"]["cond"]
    assert len(cond["mass_used"]) == table["blocks"] == sum(n for _, n in table["block_kinds"])
    assert all(abs(v) > 1e-4 for v in (row[0] for row in cond["change"]))  # TACA's step moved every block
    (stitch,) = [node for node in load_workflow(BALANCE)["nodes"] if node["type"] == "ImageStitch"]
    gap = stitch["widgets_values"][2]
    left, right = stitched[:, :TEST_SIZE], stitched[:, TEST_SIZE + gap:]
    assert np.abs(right.astype(int) - left).max() > 0

    # The baseline run is the untouched model: TACA and its LoRA bypassed (Ctrl+B), the TACA
    # run gives the same latent; the two runs are then one, and nothing changed.
    server.forget_results()
    plain_stitched, _, plain, plain_latents = balance_run(server, bypass=TACA_NODES)
    assert torch.equal(plain_latents["baseline"], latents["baseline"]) and torch.equal(plain_latents["TACA"], latents["baseline"])
    assert np.array_equal(plain_stitched[:, :TEST_SIZE], left)
    assert plain["taca"] is None and plain["taca_lora"] is None and plain["in_window"] == [False, False]
    assert plain["heatmap"]["min"] == plain["heatmap"]["max"] == 0 and plain["heatmap"]["colour_scale"] == [-0.01, 0.01]
    # The probe only looks: bypassing the probe, the plot and the plot's Save Image, as the
    # workflow's note says, leaves the baseline run as it was.
    prompt = server.small_run(load_workflow(BALANCE), bypass=TACA_NODES + ("TACABalanceProbe", "TACABalancePlot"))
    prompt = {i: node for i, node in prompt.items() if node["class_type"] != "SaveImage" or "images" in node["inputs"]}
    assert not of_type(prompt, "TACABalancePlot") and len(of_type(prompt, "SaveImage")) == 1
    prompt = with_saved_latents(prompt)
    assert torch.equal(server.latent(server.run(prompt), "latent_baseline"), latents["baseline"])


# --- the headless runner ------------------------------------------------------------------

def test_client_follows_a_run_across_quiet_periods(server):
    """ComfyUI sends nothing while it loads or computes; the client's socket times out and reads on."""
    prompt = server.small_run(load_workflow("taca_sd35_large"))
    for node in prompt.values():
        if "seed" in node["inputs"]:
            node["inputs"]["seed"] = 99  # not run before, so not cached
    events = []
    entry = ComfyClient(server.url).run(prompt, on_event=lambda kind, data: events.append(kind), quiet=0.005)
    assert entry["status"]["status_str"] == "success" and "progress" in events, events


def run_taca_compare(*args, timeout=600, returncode=0):
    command = [sys.executable, str(PACK / "tools" / "taca_compare.py"), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == returncode, done.stderr
    return done


def ink(image: np.ndarray) -> np.ndarray:
    """Where dark label text is on a white band."""
    return image.min(axis=-1) < 128


def test_taca_compare_on_a_running_server(server, tmp_path):
    variant = tmp_path / "side_by_side.json"
    variant.write_text(json.dumps(model_files.substitute_text_encoders(load_workflow(SIDE_BY_SIDE))))
    out, text, seed = tmp_path / "compare.png", "a green triangle inside a yellow circle", 1234
    done = run_taca_compare("--server", server.url, "--workflow", variant, "--prompt", text, "--seed", seed,
                            "--steps", TEST_STEPS, "--width", TEST_SIZE, "--height", TEST_SIZE, "--out", out)
    log = done.stderr

    for branch in ("baseline", "TACA"):
        assert f"Sampler: {branch}: step {TEST_STEPS}/{TEST_STEPS}" in log, log
    assert "image 2/2 done" in log, log
    assert done.stdout.strip() == f"wrote {out}"
    # The server ran the prompt and seed given on the command line.
    ((ran, entry),) = [(e["prompt"][2], e) for e in server.client.get("/history").values()
                       if any(node["inputs"].get("text") == text for node in e["prompt"][2].values())]
    assert [node["inputs"]["noise_seed"] for node in ran.values() if node["class_type"] == "RandomNoise"] == [seed]

    # What ComfyUI saved, under a white band that names each half: "Baseline" over the left
    # one, "TACA" over the right one (at 64 px the short label; see the next test for the long).
    (save,) = of_type(ran, "SaveImage")
    saved = server.image(entry, save)
    written = np.asarray(Image.open(out).convert("RGB"))
    band = written.shape[0] - TEST_SIZE
    assert band > 0 and written.shape[1] == saved.shape[1] > 2 * TEST_SIZE
    assert np.array_equal(written[band:], saved)
    header = written[:band]
    assert (header.max(-1) == header.min(-1)).all() and (header == 255).all(-1).mean() > 0.8  # white, and grey text
    gap = saved.shape[1] - 2 * TEST_SIZE
    left, right = ink(written[:band, :TEST_SIZE]), ink(written[:band, TEST_SIZE + gap:])
    assert left.sum() > 20 and right.sum() > 20 and not ink(written[:band, TEST_SIZE:TEST_SIZE + gap]).any()
    assert stitch_labels(ran, save) == ("right", gap, ("Baseline",), ("TACA: gamma 1.2, threshold 970", "TACA"))
    assert "prompt" in Image.open(out).info  # ComfyUI's metadata kept

    # --no-labels: the image exactly as ComfyUI saved it.
    plain = tmp_path / "plain.png"
    assert save_images(server.client, entry, ran, str(plain), labels=False) == [str(plain)]
    assert plain.read_bytes() == server.files(entry, save)[0]


@pytest.mark.parametrize("direction", ["right", "left", "down", "up"])
def test_labels_name_each_part_of_a_stitched_image(direction):
    # Parts of 320 px: the long TACA label fits; side by side one band above both, one above
    # each part when stacked. "left" and "up" put image2 (here TACA) first.
    size, gap = 320, 16
    horizontal = direction in ("left", "right")
    stitched = np.full((size, 2 * size + gap, 3) if horizontal else (2 * size + gap, size, 3), 90, np.uint8)
    png = io.BytesIO()
    Image.fromarray(stitched).save(png, format="PNG")
    first, second = ("Baseline",), ("TACA: gamma 1.2, threshold 970", "TACA")
    if direction in ("left", "up"):
        first, second = second, first
    out = np.asarray(Image.open(io.BytesIO(labeled(png.getvalue(), direction, gap, first, second))).convert("RGB"))
    if horizontal:
        band = out.shape[0] - size
        assert out.shape[1] == stitched.shape[1] and np.array_equal(out[band:], stitched)
        labels = [ink(out[:band, :size]), ink(out[:band, size + gap:])]
        assert not ink(out[:band, size:size + gap]).any()
    else:
        band = (out.shape[0] - stitched.shape[0]) // 2
        assert out.shape[0] == stitched.shape[0] + 2 * band
        assert np.array_equal(out[band:band + size + gap], stitched[:size + gap])
        assert np.array_equal(out[2 * band + size + gap:], stitched[size + gap:])
        labels = [ink(out[:band]), ink(out[band + size + gap:2 * band + size + gap])]
    widths = [np.ptp(np.flatnonzero(label.any(axis=0))) for label in labels]
    # The long TACA label is wider than "Baseline", on the side it belongs to; each label centred.
    assert (widths[0] < widths[1]) == (first == ("Baseline",)), widths
    for label in labels:
        columns = np.flatnonzero(label.any(axis=0))
        assert abs((columns[0] + columns[-1]) / 2 - label.shape[1] / 2) < 4


def test_taca_compare_labels_only_a_baseline_against_taca(server):
    prompt = to_api_prompt(load_workflow(SIDE_BY_SIDE), server.object_info)
    (save,) = of_type(prompt, "SaveImage")
    (stitch,) = of_type(prompt, "ImageStitch")
    gap = prompt[stitch]["inputs"]["spacing_width"]
    assert stitch_labels(prompt, save) == ("right", gap, ("Baseline",), ("TACA: gamma 1.2, threshold 970", "TACA"))
    prompt[stitch]["inputs"]["direction"] = "left"  # image2, the TACA branch, on the left
    assert stitch_labels(prompt, save)[2:] == (("TACA: gamma 1.2, threshold 970", "TACA"), ("Baseline",))
    # With TACA and its LoRA bypassed both halves are the baseline: nothing to label.
    bypassed = server.small_run(load_workflow(SIDE_BY_SIDE), bypass=TACA_NODES)
    assert stitch_labels(bypassed, save) is None
    # A workflow with one image has no stitch.
    single = to_api_prompt(load_workflow("taca_flux_dev"), server.object_info)
    assert stitch_labels(single, image_saver(single)) is None


def test_taca_compare_set_names_the_inputs_of_the_node_it_found(server, tmp_path):
    prompt = to_api_prompt(load_workflow(SIDE_BY_SIDE), server.object_info)
    args = parse_args(["--server", server.url, "--prompt", "a cat", "--seed", "1", "--set", "TACA.gamma=1.3"])
    (taca,) = of_type(apply_options(prompt, args, server.object_info), "TACA")
    assert prompt[taca]["inputs"]["gamma"] == 1.3

    taca_inputs = [name for section in ("required", "optional") for name in server.object_info["TACA"]["input"].get(section, {})]
    wrong_input = parse_args(["--server", server.url, "--prompt", "a cat", "--seed", "1", "--set", "TACA.gama=1.3"])
    with pytest.raises(WorkflowError) as raised:
        apply_options(prompt, wrong_input, server.object_info)
    message = str(raised.value)
    assert "node 'TACA' has no input 'gama'" in message and "Did you mean 'TACA.gamma'?" in message, message
    assert f"takes {', '.join(taca_inputs)}" in message, message

    wrong_node = parse_args(["--server", server.url, "--prompt", "a cat", "--seed", "1", "--set", "TACCA.gamma=1.3"])
    with pytest.raises(WorkflowError, match=r"no node titled or of type 'TACCA'\. Did you mean 'TACA'\?.*'Sampler: TACA' \(SamplerCustomAdvanced\)"):
        apply_options(prompt, wrong_node, server.object_info)

    # From the command line: the message, and nothing queued.
    before = set(server.client.get("/history"))
    done = run_taca_compare("--server", server.url, "--prompt", "a cat", "--seed", 1, "--set", "TACA.gama=1.3",
                            "--out", tmp_path / "x.png", returncode=1)
    assert "node 'TACA' has no input 'gama'" in done.stderr and "Did you mean 'TACA.gamma'?" in done.stderr, done.stderr
    assert set(server.client.get("/history")) == before and not (tmp_path / "x.png").exists()


def test_taca_compare_starts_comfyui_and_stops_it_by_pid(server, tmp_path):
    out = tmp_path / "large.png"
    comfyui_args = " ".join([*SERVER_ARGS, "--base-directory", str(server.base)])
    log = run_taca_compare("--comfyui", COMFYUI, "--comfyui-args", comfyui_args, "--workflow", WORKFLOWS / "taca_sd35_large.json",
                           "--prompt", "two red apples left of a blue vase", "--seed", 5,
                           "--steps", TEST_STEPS, "--width", TEST_SIZE, "--height", TEST_SIZE, "--out", out).stderr

    started = re.search(r"started ComfyUI \(pid (\d+)\)", log)
    assert started and f"stopped ComfyUI (pid {started[1]})" in log, log
    with pytest.raises(ProcessLookupError):
        os.kill(int(started[1]), 0)
    assert Image.open(io.BytesIO(out.read_bytes())).size == (TEST_SIZE, TEST_SIZE)
