"""Scoring for the prompt-adherence evaluation: T2I-CompBench's BLIP-VQA and spatial rules,
CLIPScore, the noun-phrase splitter, the prompt sets and the paired bootstrap.

The scorer models are tiny random ones built here from transformers configurations and
loaded by path through the same loader as a Hugging Face id. Their scores mean nothing:
the tests check the plumbing and the math against the models' own forward passes.
"""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers", reason="the scorers need transformers (tests/requirements.txt)")
import torch  # noqa: E402
from PIL import Image  # noqa: E402

PACK = Path(__file__).absolute().parents[1]
sys.path.insert(0, str(PACK / "tools"))
sys.path.insert(0, str(Path(__file__).absolute().parent))

import eval_scorers  # noqa: E402
import tiny_scorer_models  # noqa: E402
from eval_phrases import noun_phrases, spatial_relation, split_noun_phrases  # noqa: E402
from eval_prompts import QUICK_SET, Prompt, load_prompts  # noqa: E402
from eval_scorers import (BlipVqa, ScorerLoadError, Scorers, relation_score, spatial_score,  # noqa: E402
                          to_unidet_frame)
from eval_stats import paired_difference  # noqa: E402


# --- the phrase splitter ------------------------------------------------------------------------

# Prompts in the forms of T2I-CompBench's attribute files, written here, with spaCy
# en_core_web_sm's noun chunks for them.
SPLITS = [
    ("a green bench and a blue bowl", ["a green bench", "a blue bowl"]),
    ("a bathroom with green tile and a red shower curtain", ["a bathroom", "green tile", "a red shower curtain"]),
    ("an orange lamp and a purple sofa", ["an orange lamp", "a purple sofa"]),
    ("a blue bowl and a red orange", ["a blue bowl", "a red orange"]),
    ("a black and white cat sits in a blue sink.", ["a black and white cat", "a blue sink"]),
    ("A long, narrow green kitchen with black and white floor tiles.",
     ["A long, narrow green kitchen", "black and white floor tiles"]),
    ("a round bagel and a rectangular cutting board", ["a round bagel", "a rectangular cutting board"]),
    ("a triangular slice of cheese and a square cracker", ["a triangular slice", "cheese", "a square cracker"]),
    ("a cubic box and a cylindrical can of beans", ["a cubic box", "a cylindrical can", "beans"]),
    ("an oval mirror and a rectangular picture frame", ["an oval mirror", "a rectangular picture frame"]),
    ("rubber boots and a glass jar", ["rubber boots", "a glass jar"]),
    ("a leather bag and wooden chopsticks", ["a leather bag", "wooden chopsticks"]),
    ("a fluffy pillow and a metallic desk lamp", ["a fluffy pillow", "a metallic desk lamp"]),
    ("The wooden chair and plastic table hold the glass vase on the fabric rug.",
     ["The wooden chair", "plastic table", "the glass vase", "the fabric rug"]),
    ("The tall lamp and the short stool were the only things in the room.",
     ["The tall lamp", "the short stool", "the only things", "the room"]),
    ("a dog on the left of a chair", ["a dog", "the left", "a chair"]),
]


@pytest.mark.parametrize("prompt,chunks", SPLITS)
def test_splitter_gives_spacys_noun_chunks(prompt, chunks):
    assert split_noun_phrases(prompt) == chunks
    assert noun_phrases(prompt) == chunks  # spaCy when installed, else the splitter: the same here


def test_blip_questions_skip_t2i_compbenchs_position_phrases_and_keep_eight():
    assert eval_scorers.blip_phrases("a red book on the left of a blue vase") == ["a red book", "a blue vase"]
    many = " and ".join(f"a red {w}" for w in "book vase cup bowl lamp sofa chair bench desk".split())
    assert len(eval_scorers.blip_phrases(many)) == 8
    assert eval_scorers.blip_question("A black and white cat.") == "a black and white cat?"


@pytest.mark.parametrize("prompt,parsed", [
    ("a dog on the left of a chair", ("dog", "on the left of", "chair")),
    ("a teddy bear on the top of a car", ("teddy bear", "on the top of", "car")),
    ("a cat next to an umbrella", ("cat", "next to", "umbrella")),
    ("a linear ruler near a lamp", ("linear ruler", "near", "lamp")),  # "near", not the "near" in "linear"
    ("a dog and a chair", None),
])
def test_spatial_prompts_give_two_objects_and_the_relation(prompt, parsed):
    assert spatial_relation(prompt) == parsed


# --- the prompts -----------------------------------------------------------------------------

def test_quick_set_has_ten_prompts_of_each_category():
    assert load_prompts(None) == load_prompts("quick") == list(QUICK_SET)
    for category in ("color", "shape", "texture", "spatial"):
        assert sum(p.category == category for p in QUICK_SET) == 10
    assert len({p.text for p in QUICK_SET}) == 40
    assert all(spatial_relation(p.text) for p in QUICK_SET if p.category == "spatial")
    assert all(len(noun_phrases(p.text)) >= 2 for p in QUICK_SET if p.category != "spatial")


@pytest.mark.parametrize("name,category", [
    ("color_val.txt", "color"), ("shape_train.txt", "shape"), ("texture.txt", "texture"),
    ("spatial_val.txt", "spatial"), ("non_spatial_val.txt", "other"), ("complex_val.txt", "other"),
    ("my_prompts.txt", "other"), ("texture-ideas.txt", "texture"),
])
def test_prompt_files_take_their_category_from_the_name(tmp_path, name, category):
    path = tmp_path / name
    path.write_text("a dog on the left of a chair\n\n  a cat near a lamp  \n")
    assert load_prompts(str(path)) == [Prompt("a dog on the left of a chair", category), Prompt("a cat near a lamp", category)]


@pytest.mark.parametrize("make,says", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_text("\n  \n"), p)[1], "holds no prompt"),
    (lambda p: (p.mkdir(), p)[1], "is a folder"),
    (lambda p: (p.write_bytes(b"\xff\xfe\xfa bad"), p)[1], "not UTF-8"),
])
def test_a_missing_or_empty_prompt_file_says_what_is_accepted(tmp_path, make, says):
    path = make(tmp_path / "color_val.txt")
    with pytest.raises(ValueError) as error:
        load_prompts(str(path))
    assert str(path) in str(error.value) and says in str(error.value)
    assert '"quick"' in str(error.value) and "one prompt per line" in str(error.value)


def test_a_spatial_file_with_a_prompt_without_relation_names_the_line(tmp_path):
    path = tmp_path / "spatial_val.txt"
    path.write_text("a dog on the left of a chair\na dog and a chair\n")
    with pytest.raises(ValueError, match="line 2: a dog and a chair"):
        load_prompts(str(path))


# --- the spatial rule, on boxes given here ---------------------------------------------------------

A = (100, 100, 200, 200)  # centre (150, 150)


@pytest.mark.parametrize("relation,box_b,expected", [
    ("on the left of", (300, 120, 400, 220), 1.0),       # B right of A: A is on its left
    ("on the left of", (0, 120, 90, 220), 0.0),          # B left of A
    ("on the left of", (120, 300, 220, 400), 0.0),       # B below A: more down than across
    ("on the right of", (0, 120, 90, 220), 1.0),
    ("on the top of", (100, 300, 200, 400), 1.0),        # B below A in the image (y down)
    ("on top of", (100, 300, 200, 400), 1.0),            # read as "on the top of"
    ("on the bottom of", (100, 0, 200, 50), 1.0),
    ("on the bottom of", (100, 300, 200, 400), 0.0),
    ("next to", (500, 150, 600, 250), 1.0),              # |dy| = 50 < 150
    ("near", (500, 500, 600, 600), 150 / 400),           # both 400 apart: 150 / 400
    ("on side of", (600, 300, 700, 400), 150 / 500),
    ("below", (300, 120, 400, 220), 0.0),                # no such relation
])
def test_relation_rule_matches_t2i_compbench(relation, box_b, expected):
    assert relation_score(relation, A, box_b) == pytest.approx(expected)


def test_overlapping_boxes_are_scored_iou_threshold_over_iou():
    b = (150, 110, 250, 210)  # centre (200, 160): right of A, overlapping
    inter = 50 * 90
    iou = inter / (100 * 100 * 2 - inter)
    assert iou >= 0.1
    assert relation_score("on the left of", A, b) == pytest.approx(0.1 / iou)


def test_spatial_score_adds_quarter_confidences_and_half_the_position_and_drops_under_half():
    right = (300, 120, 400, 220)
    assert spatial_score([(*A, 0.9), (*right, 0.2)], [(*right, 0.6)], "on the left of") == pytest.approx(
        0.25 * 0.9 + 0.25 * 0.6 + 0.5)
    # the most confident box of each object is the one judged, wherever it sits in the list
    assert spatial_score([(0, 120, 90, 220, 0.3), (*A, 0.8)], [(*right, 0.4)], "on the left of") == pytest.approx(
        0.25 * 0.8 + 0.25 * 0.4 + 0.5)
    assert spatial_score([(*A, 0.9)], [(0, 120, 90, 220, 0.9)], "on the left of") == 0.0  # wrong side: 0.45
    assert spatial_score([(*A, 1.0)], [], "on the left of") == 0.0  # one object alone is at most 0.25
    assert spatial_score([], [], "near") == 0.0


def test_boxes_are_judged_at_unidets_scale():
    assert to_unidet_frame([(0, 0, 1024, 512, 0.5)], 1024, 1024) == [(0, 0, 479, 239.5, 0.5)]
    scale = 480 / 1024  # a 2:1 image: a short side of 479 would make the long one 958 > 480
    assert to_unidet_frame([(1024, 512, 1024, 512)], 1024, 512) == [(1024 * scale, 512 * scale) * 2]


# --- the bootstrap -----------------------------------------------------------------------------

def test_paired_difference_on_data_with_a_known_answer():
    rng = np.random.default_rng(1)
    n = 4000
    base = rng.uniform(0, 1, n)
    other = base + 0.05 + rng.normal(0, 0.2, n)
    r = paired_difference(base, other, n_boot=2000, seed=3)
    d = other - base
    half = 1.959964 * d.std(ddof=1) / math.sqrt(n)  # the normal interval, right for this n
    assert r["n"] == n and r["diff"] == pytest.approx(d.mean())
    assert r["mean_baseline"] == pytest.approx(base.mean()) and r["mean"] == pytest.approx(other.mean())
    assert r["low"] == pytest.approx(d.mean() - half, abs=0.15 * half)
    assert r["high"] == pytest.approx(d.mean() + half, abs=0.15 * half)
    assert r["share_higher"] == pytest.approx((d > 0).mean())
    assert r == paired_difference(base, other, n_boot=2000, seed=3)  # reproducible


def test_bootstrap_interval_covers_the_true_difference_about_95_in_100_times():
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        base = rng.uniform(0, 1, 60)
        other = base + 0.1 + rng.normal(0, 0.3, 60)
        r = paired_difference(base, other, n_boot=400, seed=trial)
        covered += r["low"] <= 0.1 <= r["high"]
    assert 176 <= covered <= 199  # 95 % of 200 is 190; the binomial spread is about 3


def test_constant_differences_give_a_point_interval_and_ties_are_not_higher():
    r = paired_difference([0.2, 0.5, 0.7], [0.3, 0.6, 0.8])
    assert r["low"] == pytest.approx(0.1) and r["high"] == pytest.approx(0.1) and r["share_higher"] == 1.0
    assert paired_difference([0.5, 0.5], [0.5, 0.6])["share_higher"] == 0.5


@pytest.mark.parametrize("a,b", [([], []), ([1.0], [1.0, 2.0]), ([float("nan")], [1.0])])
def test_paired_difference_refuses_unpaired_or_empty_scores(a, b):
    with pytest.raises(ValueError):
        paired_difference(a, b)


# --- the scorer models -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorers")
    return {"blip": str(tiny_scorer_models.build_blip_vqa(root / "blip")),
            "clip": str(tiny_scorer_models.build_clip(root / "clip")),
            "detector": str(tiny_scorer_models.build_owlv2(root / "owlv2"))}


@pytest.fixture(scope="module")
def scorers(models):
    return Scorers(**models, device="cpu", batch_size=3)


def noise_image(seed: int, size=(48, 40)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def blip_p_yes_by_forward(model, processor, image, question) -> float:
    """P(yes) from BlipForQuestionAnswering's own forward: its decoder loss for the answers
    "yes" and "no" after [DEC] is minus their log-likelihood at the first answer token."""
    tokenizer = processor.tokenizer
    ids = tokenizer(question, return_tensors="pt")["input_ids"]
    ids[0, 0] = tokenizer.convert_tokens_to_ids("[ENC]")  # BLIP's VQA questions start with [ENC]
    pixels = processor.image_processor(image, return_tensors="pt")["pixel_values"]
    dec = model.config.text_config.bos_token_id
    log_likelihood = {}
    for answer in ("yes", "no"):
        labels = torch.tensor([[dec, tokenizer.convert_tokens_to_ids(answer)]])
        with torch.no_grad():
            out = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids), labels=labels)
        log_likelihood[answer] = -out.loss.item()
    yes, no = math.exp(log_likelihood["yes"]), math.exp(log_likelihood["no"])
    return yes / (yes + no)


def test_blip_p_yes_equals_the_models_own_forward(models):
    blip = BlipVqa(models["blip"], "cpu", batch_size=4)
    images = [noise_image(i) for i in range(3)]
    # questions of several lengths on shared images, batched together
    pairs = [(images[0], "a red book?"), (images[1], "a red book?"), (images[0], "a bathroom?"),
             (images[2], "a red shower curtain?"), (images[1], "green tile?")]
    got = blip.p_yes(pairs)
    want = [blip_p_yes_by_forward(blip.model, blip.processor, image, q) for image, q in pairs]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert len(set(round(p, 6) for p in got)) > 1  # the images and questions do change it


def test_attribute_score_is_the_product_over_the_noun_phrases(scorers):
    image = noise_image(11)
    prompt = Prompt("a bathroom with green tile and a red shower curtain", "color")
    [result] = scorers.score([(image, prompt)])
    blip = scorers._model("blip")
    each = [blip_p_yes_by_forward(blip.model, blip.processor, image, q)
            for q in ("a bathroom?", "green tile?", "a red shower curtain?")]
    assert result["attribute"] == pytest.approx(each[0] * each[1] * each[2], rel=1e-5)
    assert set(result) == {"clip", "attribute"}


def test_clipscore_is_two_and_a_half_times_the_positive_cosine(scorers):
    items = [(noise_image(20 + k), Prompt(text, "other")) for k, text in enumerate(["a red book", "a cat on the left"])]
    got = [r["clip"] for r in scorers.score(items)]
    clip = scorers._model("clip")

    def features(out):  # a tensor in transformers 4, an output with the projection as pooler_output in 5
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    for (image, prompt), score in zip(items, got):
        text = clip.processor.tokenizer(["A photo depicts " + prompt.text], return_tensors="pt")
        pixels = clip.processor.image_processor(image, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            t = features(clip.model.get_text_features(**text))
            i = features(clip.model.get_image_features(pixel_values=pixels))
        cos = torch.nn.functional.cosine_similarity(t, i).item()
        assert score == pytest.approx(2.5 * max(cos, 0.0), rel=1e-5, abs=1e-6)


def test_detections_are_the_processors_own_boxes_and_the_spatial_score_their_rule(scorers):
    image = noise_image(30, size=(64, 40))  # not square: OWLv2 pads it to 64 x 64
    prompt = Prompt("a dog on the left of a chair", "spatial")
    [result] = scorers.score([(image, prompt)])
    detector = scorers._model("detector")
    [found] = detector.detect([image], [("dog", "chair")])
    assert result == {"clip": result["clip"], "spatial": spatial_score(
        to_unidet_frame(found["dog"], 64, 40), to_unidet_frame(found["chair"], 64, 40), "on the left of")}
    inputs = detector.processor(text=[["a photo of a dog", "a photo of a chair"]], images=[image], return_tensors="pt")
    with torch.no_grad():
        outputs = detector.model(**inputs)
    [reference] = detector.processor.image_processor.post_process_object_detection(
        outputs, threshold=detector.threshold, target_sizes=[(40, 64)])
    want = sorted((tuple(box), score, label) for box, score, label in zip(
        reference["boxes"].tolist(), reference["scores"].tolist(), reference["labels"].tolist()))
    got = sorted((tuple(b[:4]), b[4], q) for q, name in enumerate(("dog", "chair")) for b in found[name])
    assert len(got) == len(want) > 0
    for (box, score, label), (ref_box, ref_score, ref_label) in zip(got, want):
        assert box == pytest.approx(ref_box, abs=1e-3) and score == pytest.approx(ref_score) and label == ref_label


def test_each_category_gets_its_scores_and_only_needed_models_load(models):
    only_clip = Scorers(**models, device="cpu")
    [r] = only_clip.score([(noise_image(1), Prompt("a cat", "other"))])
    assert set(r) == {"clip"} and set(only_clip._models) == {"clip"}
    s = Scorers(**models, device="cpu", batch_size=2)
    items = [(noise_image(k), p) for k, p in enumerate(QUICK_SET[::5])]  # 8 prompts, every category
    results = s.score(items)
    for (_, p), r in zip(items, results):
        expected = {"clip", "spatial"} if p.category == "spatial" else {"clip", "attribute"}
        assert set(r) == expected
        assert all(0.0 <= v <= 2.5 for v in r.values())
    assert set(s._models) == {"blip", "clip", "detector"}


def test_describe_names_the_models_and_says_the_detector_is_not_unidet(models):
    s = Scorers(**models, device="cpu")
    d = s.describe()
    assert d["attribute"]["model"] == models["blip"] and d["clip"]["model"] == models["clip"]
    assert d["spatial"]["detector"] == models["detector"] and "UniDet" in d["spatial"]["differs"]
    assert s._models == {}  # describing loads nothing


def test_a_scorer_that_cannot_be_loaded_offline_says_how_to_get_it(tmp_path):
    # A fresh process, so that the Hub library reads HF_HUB_OFFLINE and the empty cache at import.
    script = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from eval_scorers import Scorers, ScorerLoadError\n"
        "from eval_prompts import Prompt\n"
        "from PIL import Image\n"
        "try:\n"
        "    Scorers(clip=None, detector=None, device='cpu').score([(Image.new('RGB', (8, 8)), Prompt('a red book', 'color'))])\n"
        "except ScorerLoadError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("TRANSFORMERS_CACHE", None)
    run = subprocess.run([sys.executable, "-c", script, str(PACK / "tools")], env=env, capture_output=True, text=True,
                         timeout=300)
    message = run.stdout
    assert "cannot load the BLIP-VQA model 'Salesforce/blip-vqa-capfilt-large'" in message, run.stdout + run.stderr
    assert "download Salesforce/blip-vqa-capfilt-large --local-dir" in message
    assert "path in place of the id" in message


def test_a_folder_that_is_no_model_says_so(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScorerLoadError, match="save_pretrained"):
        Scorers(clip=str(tmp_path / "empty"), device="cpu").score([(noise_image(0), Prompt("a cat", "other"))])
