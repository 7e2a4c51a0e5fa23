"""tools/taca_eval.py end to end: a real ComfyUI server with the tests' tiny models makes the images,
tiny random scorer models (tests/tiny_scorer_models.py) score them, and the report holds them all.

Random models give meaningless scores: these tests assert the plumbing (which prompts reach the
server, what is kept, what is made again), never that TACA scores higher. The report's math is
tested in tests/test_eval_tool.py and the scorers' in the scorers' own tests.
"""

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

import model_files
from comfy_server import COMFYUI, PACK, SERVER_ARGS, TEST_SIZE, TEST_STEPS, load_workflow

sys.path.insert(0, str(PACK / "tests"))
import tiny_scorer_models  # noqa: E402

TOOL = PACK / "tools" / "taca_eval.py"
# One prompt per category file, in T2I-CompBench's file naming and prompt style.
PROMPTS = {
    "color": "a green bench and a blue bowl",
    "texture": "a fluffy towel and a metallic spoon",
    "spatial": "a cat on the left of a dog",
}
SEEDS = 2
GRID = ("--gamma", "1.2,1.5", "--threshold", "970")  # the baseline and 2 settings: 3 x 2 x 3 = 18 images
IMAGES = len(PROMPTS) * SEEDS * 3


def shipped_workflow(folder, name):
    """A shipped workflow as the test server runs it (its text encoder substituted), written to a file."""
    path = folder / f"{name}.json"
    path.write_text(json.dumps(model_files.substitute_text_encoders(load_workflow(name))))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The SD3.5-Medium workflow (TACA and its LoRA; the tests' tiny SD3.5 samples in a fraction of the
    tests' FLUX.1-dev's time) and the prompt files."""
    folder = tmp_path_factory.mktemp("eval-inputs")
    workflow = shipped_workflow(folder, "taca_sd35_medium")
    prompts = []
    for category, text in PROMPTS.items():
        (folder / f"{category}_val.txt").write_text(text + "\n")
        prompts.append(folder / f"{category}_val.txt")
    return {"workflow": workflow, "prompts": prompts, "folder": folder}


@pytest.fixture(scope="module")
def scorers(tmp_path_factory):
    """--blip, --clip and --detector options naming tiny random models saved in folders."""
    folder = tmp_path_factory.mktemp("eval-scorers")
    return ["--blip", tiny_scorer_models.build_blip_vqa(folder / "blip"), "--clip", tiny_scorer_models.build_clip(folder / "clip"),
            "--detector", tiny_scorer_models.build_owlv2(folder / "owlv2"), "--device", "cpu"]


def run_eval(*args, timeout=900, check=True, env=None):
    command = [sys.executable, str(TOOL), *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if check:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def small(files, server=None, prompts=None):
    """The options every run here shares: the workflow at 64² and 2 steps, its prompts and seeds."""
    where = ["--server", server.url] if server is not None else []
    return [*where, "--workflow", files["workflow"], "--prompts", *(prompts or files["prompts"]), "--seeds", SEEDS,
            "--steps", TEST_STEPS, "--width", TEST_SIZE, "--height", TEST_SIZE]


def history(server) -> dict:
    wait_until_idle(server)
    return server.client.get("/history")


def wait_until_idle(server, timeout=600):
    """Until ComfyUI's queue is empty: a killed client's prompt still runs to its end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = server.client.get("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            return
        time.sleep(0.2)
    raise TimeoutError("ComfyUI's queue did not empty")


def queued(server, before: dict) -> list:
    """The API prompts that reached the server since `before` (a /history snapshot)."""
    return [entry["prompt"][2] for prompt_id, entry in history(server).items() if prompt_id not in before]


def index(out) -> list:
    path = out / "index.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def of_type(prompt: dict, class_type: str) -> list:
    return [node for node in prompt.values() if node["class_type"] == class_type]


def text_of(prompt: dict) -> str:
    (node,) = [node for node in prompt.values() if node["_meta"]["title"] == "Prompt"]
    return node["inputs"]["text"]


def seed_of(prompt: dict) -> int:
    (seed,) = {node["inputs"]["seed"] for node in prompt.values() if "seed" in node["inputs"]}
    return seed


# --- a whole run, a rerun, a setting added ----------------------------------------------------

@pytest.fixture(scope="module")
def first_run(server, files, scorers, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-run")
    before = history(server)
    done = run_eval(*small(files, server), *GRID, *scorers, "--out", out)
    return {"out": out, "done": done, "queued": queued(server, before)}


def test_a_run_makes_scores_and_reports_every_image(first_run):
    out, done = first_run["out"], first_run["done"]
    records = index(out)
    assert len(records) == IMAGES == len({r["key"] for r in records})
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{r['key']}.png" for r in records)

    report = json.loads((out / "report.json").read_text())
    assert len(report["images"]) == IMAGES and report["counts"] == {"planned": IMAGES, "made": IMAGES, "scored": IMAGES}
    for image in report["images"]:
        scores = image["scores"]
        assert 0 <= scores["clip"] and set(scores) == {"clip", "spatial" if image["category"] == "spatial" else "attribute"}
        assert (out / image["file"]).is_file()
    assert [row["label"] for row in report["summary"]["rows"]] == [
        "baseline (TACA bypassed)", "γ₀ 1.2, threshold 970, LoRA on", "γ₀ 1.5, threshold 970, LoRA on"]
    assert [c["name"] for c in report["summary"]["columns"]] == ["color", "texture", "spatial", "CLIP"]
    for row in report["summary"]["rows"][1:]:
        assert row["cells"]["CLIP"]["n"] == len(PROMPTS) * SEEDS and row["cells"]["color"]["n"] == SEEDS
        assert row["cells"]["color"]["low"] <= row["cells"]["color"]["diff"] <= row["cells"]["color"]["high"]

    markdown = (out / "report.md").read_text()
    assert markdown in done.stdout and "| setting | color | texture | spatial | CLIP |" in markdown and "UniDet" in markdown
    page = (out / "report.html").read_text()
    assert page.count('<img loading="lazy"') == IMAGES and "not scored" not in page
    with open(out / "scores.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == IMAGES
    assert (out / "report.png").stat().st_size > 10_000 and (out / "summary.csv").is_file()
    # The progress bar and the estimate of the total time.
    assert f"[{IMAGES}/{IMAGES}]" in done.stderr and "ETA" in done.stderr and "estimate: the first image took" in done.stderr


def test_the_server_ran_the_baseline_and_each_setting_on_the_same_prompts_and_seeds(first_run):
    ran = first_run["queued"]
    assert len(ran) == IMAGES
    baseline = [p for p in ran if not of_type(p, "TACA")]
    assert len(baseline) == IMAGES // 3 and not any(of_type(p, "TACALoraLoader") for p in baseline)
    by_gamma = {}
    for prompt in ran:
        for node in of_type(prompt, "TACA"):
            assert node["inputs"]["threshold"] == 970 and len(of_type(prompt, "TACALoraLoader")) == 1
            by_gamma.setdefault(node["inputs"]["gamma"], []).append(prompt)
    assert sorted(by_gamma) == [1.2, 1.5]
    pairs = {name: sorted((text_of(p), seed_of(p)) for p in prompts) for name, prompts in [("baseline", baseline), *by_gamma.items()]}
    assert pairs["baseline"] == pairs[1.2] == pairs[1.5] == sorted((t, s) for t in PROMPTS.values() for s in range(SEEDS))
    for prompt in ran:  # sized as asked, and nothing written to ComfyUI's output folder
        assert {(n["inputs"]["width"], n["inputs"]["height"]) for n in of_type(prompt, "EmptySD3LatentImage")} == {(TEST_SIZE, TEST_SIZE)}
        assert not of_type(prompt, "SaveImage") and len(of_type(prompt, "PreviewImage")) == 1


def test_a_rerun_queues_nothing_and_scores_nothing(server, files, scorers, first_run):
    out = first_run["out"]
    lines, scored = (out / "index.jsonl").read_text(), (out / "scores.jsonl").read_text()
    before = history(server)
    done = run_eval(*small(files, server), *GRID, *scorers, "--out", out)
    assert queued(server, before) == []
    assert (out / "index.jsonl").read_text() == lines and (out / "scores.jsonl").read_text() == scored
    assert f"{IMAGES} done before, 0 to make" in done.stderr and "scoring 0 images" in done.stderr
    assert (out / "report.md").read_text() in done.stdout


def test_a_setting_added_makes_and_scores_only_its_images(server, files, scorers, first_run, tmp_path):
    out = tmp_path / "more"
    shutil.copytree(first_run["out"], out)
    before = history(server)
    done = run_eval(*small(files, server), "--gamma", "1.2,1.5,1.3", "--threshold", "970", *scorers, "--out", out)
    ran = queued(server, before)
    assert len(ran) == len(PROMPTS) * SEEDS and all(of_type(p, "TACA")[0]["inputs"]["gamma"] == 1.3 for p in ran)
    assert "scoring 6 images (18 scored before)" in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["scored"] == IMAGES + 6 and len(report["summary"]["rows"]) == 4


# --- killed, and a server that dies -------------------------------------------------------------

def test_a_run_killed_midway_completes_on_the_next_run_without_duplicates(server, files, tmp_path):
    out, options = tmp_path / "killed", small(files, server, prompts=files["prompts"][:2])
    planned = 2 * SEEDS * 3
    command = [sys.executable, str(TOOL), "generate", *map(str, options), *GRID, "--out", str(out)]
    tool = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while len(index(out)) < 3 and tool.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        os.kill(tool.pid, signal.SIGKILL)
        tool.wait()
    kept = len(index(out))
    assert 3 <= kept < planned

    before = history(server)
    done = run_eval("generate", *options, *GRID, "--out", out)
    assert len(queued(server, before)) == planned - kept and f"{kept} done before, {planned - kept} to make" in done.stderr
    records = index(out)
    assert len(records) == planned == len({r["key"] for r in records})
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{r['key']}.png" for r in records)


def test_a_server_that_dies_midway_loses_nothing_and_the_rerun_resumes(server, files, tmp_path):
    out = tmp_path / "died"
    options = small(files, prompts=files["prompts"][:1])
    comfyui_args = " ".join([*SERVER_ARGS, "--base-directory", str(server.base)])
    command = [sys.executable, str(TOOL), "generate", "--comfyui", str(COMFYUI), "--comfyui-args", comfyui_args,
               *map(str, options), *GRID, "--out", str(out)]
    tool = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = []
    try:
        for line in tool.stderr:
            log.append(line)
            if started := re.match(r"started ComfyUI \(pid (\d+)\)", line):
                pid = int(started[1])
            if line.startswith("[1/"):  # one image done
                os.kill(pid, signal.SIGKILL)
                break
        log += tool.stderr.readlines()
    finally:
        tool.wait(timeout=120)
    log = "".join(log)
    assert tool.returncode == 1, log
    assert re.search(r"1 of 6 images are done and kept in .*; run the same command again", log), log
    assert "exited with code" in log and len(index(out)) == 1

    before = history(server)
    done = run_eval("generate", "--server", server.url, *options, *GRID, "--out", out)
    assert len(queued(server, before)) == 5 and "1 done before, 5 to make" in done.stderr
    assert len({r["key"] for r in index(out)}) == len(index(out)) == 6


# --- the grid's other axes -------------------------------------------------------------------------

def test_lora_on_and_off_and_taca_advanced_options_reach_the_server(server, files, tmp_path):
    before = history(server)
    run_eval("generate", *small(files, server, prompts=files["prompts"][:1]), "--seeds", 1, "--gamma", 1.3, "--threshold", 950,
             "--lora", "on,off", "--advanced", "schedule=cosine", "--advanced", "schedule=step (paper)",
             "--advanced", "t_end=900", "--set", "TACALoraLoader.strength=0.5", "--out", tmp_path / "grid")
    ran = queued(server, before)
    assert len(ran) == 1 + 4
    settings = sorted((len(of_type(p, "TACALoraLoader")), node["inputs"]["schedule"])
                      for p in ran for node in of_type(p, "TACAAdvanced"))
    assert settings == [(0, "cosine"), (0, "step (paper)"), (1, "cosine"), (1, "step (paper)")]
    # --set on the LoRA loader: where it runs (the baseline and 'off' bypass it, and run all the same)
    assert [node["inputs"]["strength"] for p in ran for node in of_type(p, "TACALoraLoader")] == [0.5, 0.5]
    for p in ran:
        for node in of_type(p, "TACAAdvanced"):  # the workflow's TACA node, become TACA Advanced
            assert (node["inputs"]["gamma"], node["inputs"]["t_start"], node["inputs"]["t_end"]) == (1.3, 950, 900)
            assert node["inputs"]["blocks"] == "all" and node["inputs"]["apply_to"] == "cond and uncond"
        assert not of_type(p, "TACA")


def test_the_default_workflow_is_flux_dev_with_its_own_gamma_and_threshold(server, files, tmp_path):
    """No --gamma, --threshold or --lora: one setting, the workflow's own (the paper's 1.2 and 970, its LoRA on)."""
    flux = shipped_workflow(tmp_path, "taca_flux_dev")
    before = history(server)
    run_eval("generate", "--server", server.url, "--workflow", flux, "--prompts", files["prompts"][0], "--seeds", 1,
             "--steps", TEST_STEPS, "--width", TEST_SIZE, "--height", TEST_SIZE, "--out", tmp_path / "flux")
    baseline, taca = sorted(queued(server, before), key=lambda p: len(of_type(p, "TACA")))
    assert not of_type(baseline, "TACA") and not of_type(baseline, "TACALoraLoader") and of_type(baseline, "FluxGuidance")
    (node,) = of_type(taca, "TACA")
    assert (node["inputs"]["gamma"], node["inputs"]["threshold"]) == (1.2, 970) and of_type(taca, "TACALoraLoader")
    assert taca_eval_defaults()["workflow"].endswith("taca_flux_dev.json")


def taca_eval_defaults():
    sys.path.insert(0, str(PACK / "tools"))
    import taca_eval

    return vars(taca_eval.parse_args(["report", "--out", "x"]))


# --- bad input: a clear error, nothing lost ---------------------------------------------------------

def test_missing_or_empty_prompt_files(server, files, tmp_path):
    missing = run_eval(*small(files, server, prompts=[tmp_path / "nowhere_val.txt"]), "--out", tmp_path / "a", check=False)
    assert missing.returncode == 1 and "nowhere_val.txt" in missing.stderr and "Traceback" not in missing.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    done = run_eval(*small(files, server, prompts=[empty]), "--out", tmp_path / "b", check=False)
    assert done.returncode == 1 and "empty.txt" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "a" / "index.jsonl").exists() and not (tmp_path / "b" / "index.jsonl").exists()


def without(workflow: dict, types) -> dict:
    """The workflow with the nodes of `types` taken out and their MODEL passed through."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"]}
    for node in [n for n in workflow["nodes"] if n["type"] in types]:
        (feed,) = [links[slot["link"]] for slot in node["inputs"] if slot["type"] == "MODEL"]
        for link in links.values():
            if link[1] == node["id"]:
                link[1], link[2] = feed[1], feed[2]
        del links[feed[0]], nodes[node["id"]]
    return {**workflow, "nodes": list(nodes.values()), "links": list(links.values())}


def test_a_workflow_without_a_taca_node_or_a_prompt_node(server, files, tmp_path):
    workflow = json.loads(files["workflow"].read_text())
    no_taca = tmp_path / "no_taca.json"
    no_taca.write_text(json.dumps(without(workflow, ("TACA", "TACALoraLoader"))))
    done = run_eval("--server", server.url, "--workflow", no_taca, "--out", tmp_path / "a", check=False)
    assert done.returncode == 1 and "has no TACA node" in done.stderr and "Traceback" not in done.stderr

    for node in workflow["nodes"]:
        node.pop("title", None) if node.get("title") == "Prompt" else None
    no_prompt = tmp_path / "no_prompt.json"
    no_prompt.write_text(json.dumps(workflow))
    done = run_eval("--server", server.url, "--workflow", no_prompt, "--out", tmp_path / "b", check=False)
    assert done.returncode == 1 and "no node titled 'Prompt'" in done.stderr and "Traceback" not in done.stderr


def test_a_scorer_that_cannot_be_loaded_says_how_to_get_it_and_keeps_the_images(first_run, scorers, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(first_run["out"], out)
    kept = {p: p.read_bytes() for p in out.rglob("*.jsonl")}
    hub_id = "Salesforce/blip-vqa-capfilt-large"
    done = run_eval("score", "--out", out, *scorers, "--blip", hub_id, check=False,
                    env={"HF_HOME": str(tmp_path / "empty-hf-home")})
    assert done.returncode == 1 and "could not load the scorer models" in done.stderr and hub_id in done.stderr
    assert "taca_eval.py score" in done.stderr and "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in out.rglob("*.jsonl")} == kept and len(list((out / "images").iterdir())) == IMAGES
