"""tools/taca_eval.py and tools/eval_report.py without ComfyUI: the keys, the grid, the folder that
makes a run resumable, and the report's pairing and files. The run through a real ComfyUI server
is tests/integration/test_eval.py."""

import csv
import json
import os
import re
import struct
import sys
import zlib
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import taca_eval  # noqa: E402
from taca_eval import BASELINE, EvalError, Store, grid, image_key, plan_jobs, setting_label, workflow_hash  # noqa: E402


def png(width=8, height=8, rgb=(200, 30, 30)) -> bytes:
    """A valid PNG of one colour, written with the standard library."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


SETTING = {"gamma": 1.2, "threshold": 970.0, "lora": "on"}


def plan(settings=None, seeds=(0, 1), prompts=(("a red book and a blue cup", "color"), ("a cat on the left of a dog", "spatial"))):
    return {"workflow": "0123456789abcdef", "prompts": [list(p) for p in prompts], "seeds": list(seeds),
            "settings": [BASELINE] + (settings if settings is not None else [SETTING])}


# --- keys --------------------------------------------------------------------------------

def test_an_image_key_names_workflow_prompt_seed_and_setting():
    key = image_key("w1", "a red book", 0, SETTING)
    assert key == image_key("w1", "a red book", 0, dict(reversed(list(SETTING.items()))))  # key order is no part of it
    others = [image_key("w2", "a red book", 0, SETTING), image_key("w1", "a red books", 0, SETTING),
              image_key("w1", "a red book", 1, SETTING), image_key("w1", "a red book", 0, {**SETTING, "gamma": 1.3}),
              image_key("w1", "a red book", 0, {**SETTING, "lora": "off"}), image_key("w1", "a red book", 0, BASELINE)]
    assert len({key, *others}) == 7
    assert re.fullmatch(r"[0-9a-f]{24}", key)


def test_the_workflow_hash_is_the_prompt_after_set_whatever_the_order_of_its_keys():
    prompt = {"1": {"class_type": "KSampler", "inputs": {"steps": 30, "cfg": 1.0}}, "2": {"class_type": "TACA", "inputs": {"gamma": 1.2}}}
    reordered = {"2": prompt["2"], "1": {"class_type": "KSampler", "inputs": {"cfg": 1.0, "steps": 30}}}
    assert workflow_hash(prompt) == workflow_hash(reordered)
    changed = json.loads(json.dumps(prompt))
    changed["1"]["inputs"]["steps"] = 29
    assert workflow_hash(changed) != workflow_hash(prompt)


# --- the grid --------------------------------------------------------------------------------

def test_the_grid_is_every_combination_and_the_baseline_comes_first():
    settings = grid([1.2, 1.3], [970.0, 950.0], ["on", "off"], {"schedule": ["cosine", "linear"]})
    assert len(settings) == 16 and len({json.dumps(s, sort_keys=True) for s in settings}) == 16
    assert settings[0] == {"gamma": 1.2, "threshold": 970.0, "lora": "on", "advanced": {"schedule": "cosine"}}
    assert grid([1.2], [970.0], [], {}) == [{"gamma": 1.2, "threshold": 970.0}]  # no LoRA loader: no LoRA axis
    jobs = plan_jobs(plan(grid([1.2, 1.3], [970.0], ["on"], {})))
    assert [job[4] for job in jobs[:3]] == [0, 1, 2]  # the baseline, then each setting, for one prompt and seed
    assert setting_label(BASELINE) == "baseline (TACA bypassed)"
    assert setting_label({"gamma": 1.25, "threshold": 950.0, "lora": "off", "advanced": {"schedule": "cosine"}}) == \
        "γ₀ 1.25, threshold 950, LoRA off, schedule cosine"


def test_grid_options_are_parsed_and_bad_ones_say_what_to_write():
    assert taca_eval.number_list("1.2,1.3,1.2", "gamma") == [1.2, 1.3]
    assert taca_eval.lora_list("on,off") == ["on", "off"]
    assert taca_eval.advanced_axes(["schedule=cosine", "blocks=0-18", "schedule=linear", "t_end=900"]) == \
        {"schedule": ["cosine", "linear"], "blocks": ["0-18"], "t_end": [900]}
    with pytest.raises(EvalError, match="numbers separated by commas"):
        taca_eval.number_list("1.2;1.3", "gamma")
    with pytest.raises(EvalError, match="'on', 'off' or 'on,off'"):
        taca_eval.lora_list("yes")
    with pytest.raises(EvalError, match="schedule, t_end, blocks, apply_to"):
        taca_eval.advanced_axes(["gamma=1.3"])


def test_every_setting_uses_the_same_prompts_and_seeds():
    p = plan(grid([1.2, 1.3], [970.0, 950.0], [], {}), seeds=(3, 4, 5))
    jobs = plan_jobs(p)
    assert len(jobs) == 2 * 3 * 5 and len({job[0] for job in jobs}) == len(jobs)
    per_setting = [sorted((text, seed) for _, text, _, seed, i in jobs if i == s) for s in range(5)]
    assert all(pairs == per_setting[0] for pairs in per_setting)


def test_prompts_from_several_sources_in_order_without_repeats(tmp_path):
    quick = taca_eval.load_prompt_list(["quick"])
    assert len(quick) == 40 and {c for _, c in quick} == {"color", "shape", "texture", "spatial"}
    (tmp_path / "color_val.txt").write_text("a red book and a blue cup\na green bench and a blue bowl\na red book and a blue cup\n")
    (tmp_path / "mine.txt").write_text("a cat\n")
    prompts = taca_eval.load_prompt_list([str(tmp_path / "color_val.txt"), str(tmp_path / "mine.txt")], limit=3)
    assert prompts == [("a red book and a blue cup", "color"), ("a green bench and a blue bowl", "color"), ("a cat", "other")]
    assert taca_eval.load_prompt_list([str(tmp_path / "color_val.txt")], limit=1) == prompts[:1]
    with pytest.raises(EvalError, match="nowhere.txt"):
        taca_eval.load_prompt_list([str(tmp_path / "nowhere.txt")])
    with pytest.raises(EvalError, match="Name the phase first"):
        taca_eval.load_prompt_list([str(tmp_path / "mine.txt"), "report"])


def test_progress_shows_images_done_rate_eta_and_an_estimate_after_the_first_images(monkeypatch):
    import io

    clock = iter([0.0, 30.0, 40.0, 50.0, 60.0])  # start; the first image loads the models, then 10 s each
    monkeypatch.setattr(taca_eval.time, "monotonic", lambda: next(clock))
    stream = io.StringIO()
    progress = taca_eval.Progress(total=6, done=2, todo=4, stream=stream, earlier=[8.0, 12.0, 10.0])
    for n in range(4):
        progress.image_done(f"image {n}")
    lines = stream.getvalue().splitlines()
    assert lines[0] == "6 images in the plan: 2 done before, 4 to make"
    assert lines[1] == "earlier images of this workflow took 10.0 s each (median of 3): about 0:00:40 for the 4 to make"
    assert lines[2].startswith("[3/6] ") and "rate after the next image" in lines[2]
    assert lines[3] == "estimate: the first image took 30.0 s (loading the models), the next 10.0 s: about 0:01:00 for all 4"
    assert lines[4].startswith("[4/6] " + "█" * 16 + "░" * 8) and "10.0 s/image, ETA 0:00:20  image 1" in lines[4]
    assert lines[-1].startswith("[6/6] " + "█" * 24) and "ETA 0:00:00" in lines[-1]


# --- the folder: resumable ------------------------------------------------------------------

def add(store, key, **extra):
    store.add_image({"key": key, "workflow": "w", "prompt": "p", "category": "color", "seed": 0, "setting": BASELINE, **extra}, png())


def test_an_image_counts_once_its_file_and_then_its_index_line_are_written(tmp_path):
    store = Store(str(tmp_path))
    store.hold("generate")
    add(store, "a" * 24, seconds=1.5)
    assert list(store.index()) == ["a" * 24] and Path(store.image_path("a" * 24)).read_bytes() == png()
    # A run killed after the file but before the index line: the image is made again.
    Path(store.image_path("b" * 24)).write_bytes(png())
    # An index line whose file was deleted: made again too.
    add(store, "c" * 24)
    os.remove(store.image_path("c" * 24))
    assert list(store.index()) == ["a" * 24]
    store.close()


def test_a_torn_last_line_and_half_written_files_of_a_killed_run_are_left_behind(tmp_path):
    store = Store(str(tmp_path))
    store.hold("generate")
    add(store, "a" * 24)
    with open(store.index_path, "ab") as f:
        f.write(b'{"key": "dddd')  # killed mid-line
    Path(store.image_path("e" * 24) + ".partial").write_bytes(png()[:20])
    store.close()

    again = Store(str(tmp_path))
    again.hold("generate")
    assert not list(Path(again.images).glob("*.partial"))
    add(again, "f" * 24)
    assert sorted(again.index()) == ["a" * 24, "f" * 24]
    lines = Path(again.index_path).read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["key"] == "f" * 24
    again.close()


def test_one_generate_and_one_score_at_a_time(tmp_path):
    pytest.importorskip("fcntl")
    first, second = Store(str(tmp_path)), Store(str(tmp_path))
    first.hold("generate")
    with pytest.raises(EvalError, match="another taca_eval generate is running"):
        second.hold("generate")
    second.hold("score")  # scoring what is made beside a run that makes more
    with pytest.raises(EvalError, match="another taca_eval score is running"):
        first.hold("score")
    first.close()
    second.hold("generate")  # a lock goes with its holder
    second.close()


def test_a_rerun_makes_only_what_is_missing_and_a_new_setting_only_its_images(tmp_path):
    store = Store(str(tmp_path))
    store.hold("generate")
    first = plan()
    for key, *_ in plan_jobs(first)[:5]:
        add(store, key)
    todo = [job for job in plan_jobs(first) if job[0] not in store.index()]
    assert [job[0] for job in todo] == [job[0] for job in plan_jobs(first)[5:]]
    for key, *_ in todo:
        add(store, key)
    more = plan([SETTING, {**SETTING, "gamma": 1.3}])
    todo = [job for job in plan_jobs(more) if job[0] not in store.index()]
    assert len(todo) == 2 * 2 and all(more["settings"][job[4]]["gamma"] == 1.3 for job in todo)
    store.close()


def test_scores_are_kept_per_image_and_per_scorer_models(tmp_path):
    store = Store(str(tmp_path))
    store.hold("generate")
    store.add_scores("s1", {"blip": "a"}, {"k1": {"clip": 0.3, "attribute": 0.5}})
    store.add_scores("s2", {"blip": "b"}, {"k1": {"clip": 0.1, "attribute": 0.2}})
    store.add_scores("s1", {"blip": "a"}, {"k2": {"clip": 0.4, "spatial": 1.0}})
    assert store.scores("s1") == {"k1": {"clip": 0.3, "attribute": 0.5}, "k2": {"clip": 0.4, "spatial": 1.0}}
    assert store.scores("s2") == {"k1": {"clip": 0.1, "attribute": 0.2}}
    assert store.scorers() == {"s1": {"blip": "a"}, "s2": {"blip": "b"}}
    assert taca_eval.scorer_id({"blip": "a", "clip": "c"}) == taca_eval.scorer_id({"clip": "c", "blip": "a"})
    store.close()


def test_score_and_report_without_a_plan_say_to_generate_first(tmp_path):
    with pytest.raises(EvalError, match="run the generate phase"):
        Store(str(tmp_path)).plan()
    with pytest.raises(SystemExit):
        taca_eval.parse_args(["--out", str(tmp_path)])  # generating needs --comfyui or --server


# --- the report --------------------------------------------------------------------------------

def rows_for(p, scores, made=None):
    """Report rows of a plan: scores(text, category, seed, setting index) -> dict or None."""
    rows = []
    for key, text, category, seed, i in plan_jobs(p):
        rows.append({"key": key, "prompt": text, "category": category, "seed": seed, "setting": i,
                     "file": f"images/{key}.png" if made is None or made(seed, i) else None,
                     "scores": scores(text, category, seed, i)})
    return rows


def synthetic(text, category, seed, i):
    """The setting scores the baseline + 0.1 on the category's score and - 0.05 on CLIP, for every pair."""
    base = 0.2 + 0.1 * seed + (0.05 if category == "color" else 0.0)
    metric = "attribute" if category == "color" else "spatial"
    return {metric: base + 0.1 * i, "clip": 0.3 + 0.01 * seed - 0.05 * i}


def test_the_table_pairs_each_setting_with_the_baseline_by_prompt_and_seed():
    import eval_report

    p = plan(seeds=(0, 1, 2))
    summary = eval_report.summarize(p["settings"], ["baseline", "TACA"], rows_for(p, synthetic), n_boot=200)
    assert summary["columns"] == [{"name": "color", "metric": "attribute"}, {"name": "spatial", "metric": "spatial"},
                                  {"name": "CLIP", "metric": "clip"}]
    base, taca = summary["rows"]
    assert base["cells"]["color"] == {"mean": pytest.approx(0.35), "n": 3}
    assert base["cells"]["CLIP"] == {"mean": pytest.approx(0.31), "n": 6}
    color = taca["cells"]["color"]
    assert color["n"] == 3 and color["diff"] == pytest.approx(0.1) and color["mean"] == pytest.approx(0.45)
    assert color["low"] == pytest.approx(0.1) and color["high"] == pytest.approx(0.1) and color["share_higher"] == 1.0
    clip = taca["cells"]["CLIP"]
    assert clip["n"] == 6 and clip["diff"] == pytest.approx(-0.05) and clip["share_higher"] == 0.0


def test_pairs_with_a_missing_image_or_score_are_left_out():
    import eval_report

    p = plan(seeds=(0, 1, 2))
    # seed 1's baseline is not made; seed 2's setting is not scored
    rows = rows_for(p, lambda t, c, seed, i: None if (seed, i) in ((1, 0), (2, 1)) else synthetic(t, c, seed, i),
                    made=lambda seed, i: (seed, i) != (1, 0))
    summary = eval_report.summarize(p["settings"], ["baseline", "TACA"], rows, n_boot=100)
    assert summary["rows"][1]["cells"]["color"]["n"] == 1 and summary["rows"][1]["cells"]["CLIP"]["n"] == 2
    assert summary["rows"][0]["cells"]["color"]["n"] == 2


def test_the_report_files_hold_every_number_and_image(tmp_path):
    import eval_report

    p = plan([SETTING, {**SETTING, "gamma": 1.3}, {**SETTING, "threshold": 950.0}], seeds=(0, 1))
    rows = rows_for(p, synthetic, made=lambda seed, i: (seed, i) != (1, 3))
    rows = [{**r, "scores": r["scores"] if r["file"] else None} for r in rows]
    (tmp_path / "images").mkdir()
    for r in rows:
        if r["file"]:
            (tmp_path / r["file"]).write_bytes(png(rgb=(20 * r["setting"], 100, 100)))
    labels = [setting_label(s) for s in p["settings"]]
    meta = {"workflow": "w", "seeds": [0, 1], "scorers": {"spatial": {"detector": "google/owlv2-base-patch16-ensemble", "threshold": 0.1}}, "bootstrap": 100}
    written = eval_report.write_report(str(tmp_path), p["settings"], labels, rows, meta, n_boot=100)

    text = (tmp_path / "report.md").read_text()
    assert text == written["markdown"]
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| setting | color | spatial | CLIP |" and [line.split(" | ")[0][2:] for line in table[2:]] == labels
    assert "Δ +0.1000 [+0.1000, +0.1000] · 100 %" in table[3] and "UniDet" in text and "owlv2" in text
    assert "Images: 14 of 16 made, 14 scored" in text

    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["images"]) == 16 and report["summary"]["rows"][1]["cells"]["color"]["diff"] == pytest.approx(0.1)
    with open(tmp_path / "summary.csv", newline="") as f:
        summary_rows = list(csv.DictReader(f))
    assert len(summary_rows) == 4 * 3 and float(summary_rows[3]["diff"]) == pytest.approx(0.1)
    with open(tmp_path / "scores.csv", newline="") as f:
        score_rows = list(csv.DictReader(f))
    assert len(score_rows) == 16 and sum(bool(r["clip"]) for r in score_rows) == 14

    page = (tmp_path / "report.html").read_text()
    assert page.count('<img loading="lazy"') == 14 and page.count("data:image/png;base64,") == 14
    assert page.count('class="row"') == 4 and "not made yet" in page
    assert 'data-category="color"' in page and 'data-category="spatial"' in page
    assert 'data-d1score="0.100000"' in page and 'value="d3clip down"' in page
    assert "src=\"http" not in page and "<script src" not in page  # self-contained


def test_a_large_gallery_keeps_the_prompts_and_seeds_that_moved_most(tmp_path):
    import eval_report

    p = plan(seeds=(0, 1, 2))  # 2 prompts x 3 seeds: 6 rows
    moved = {("color", 0): 0.3, ("color", 1): 0.01, ("color", 2): -0.5, ("spatial", 0): 0.0, ("spatial", 1): 0.02, ("spatial", 2): 0.1}

    def scores(text, category, seed, i):
        metric = "attribute" if category == "color" else "spatial"
        return {metric: 0.4 + (moved[category, seed] if i else 0.0), "clip": 0.3}

    rows = [{**r, "file": None} for r in rows_for(p, scores)]
    summary = eval_report.summarize(p["settings"], ["baseline", "TACA"], rows, n_boot=10)
    page = eval_report.html_report(summary, rows, ["baseline", "TACA"], {}, str(tmp_path), 64, "", gallery=3)
    shown = re.findall(r'<span class="tag">(\w+) · seed (\d)</span>', page)
    assert shown == [("color", "0"), ("color", "2"), ("spatial", "2")] and "shows 3 of the 6 prompts and seeds" in page
    page = eval_report.html_report(summary, rows, ["baseline", "TACA"], {}, str(tmp_path), 64, "", gallery=6)
    assert page.count('class="row"') == 6 and "of the 6" not in page


def test_the_html_shrinks_large_images_to_jpeg(tmp_path):
    pytest.importorskip("PIL")
    import eval_report

    path = tmp_path / "big.png"
    path.write_bytes(png(600, 300))
    assert eval_report.image_uri(str(path), 128).startswith("data:image/jpeg;base64,")
    assert eval_report.image_uri(str(path), 1024).startswith("data:image/png;base64,")


def test_the_plot_has_a_panel_per_column(tmp_path):
    pytest.importorskip("matplotlib")
    import eval_report
    from PIL import Image

    p = plan([SETTING, {**SETTING, "gamma": 1.3}, {**SETTING, "threshold": 950.0}])
    summary = eval_report.summarize(p["settings"], ["b", "1", "2", "3"], rows_for(p, synthetic), n_boot=50)
    eval_report.plot(summary, str(tmp_path / "plot.png"))
    width, height = Image.open(tmp_path / "plot.png").size
    assert width > 2.5 * height  # three panels side by side
