"""Prompt-adherence scores for generated images, the way T2I-CompBench computes them.

- Attribute binding (color, shape, texture): T2I-CompBench's BLIP-VQA score (Huang et al.,
  T2I-CompBench, NeurIPS 2023; its BLIPvqa_eval). One question "<noun phrase>?" per noun
  phrase of the prompt; P(yes) is the answer ranking over "yes" and "no" at the decoder's
  first answer token, p(yes) / (p(yes) + p(no)); the score is the product over the phrases.
- Spatial: T2I-CompBench's UniDet_eval rule on the two objects' boxes (`spatial_score`), with
  a zero-shot detector from transformers (OWLv2) in place of UniDet.
- CLIPScore (Hessel et al., 2021) on every prompt: 2.5 · max(cos(image, "A photo depicts " + prompt), 0).

Models load from a Hugging Face id or a local folder (`load_pretrained`), lazily, only
those that the items need, on CUDA when there is one. `Scorers` is the entry point.
"""

import os
import re

try:
    from .eval_phrases import noun_phrases, phrase_source, spatial_relation
except ImportError:  # run from tools/, as the command-line tools are
    from eval_phrases import noun_phrases, phrase_source, spatial_relation

DEFAULT_BLIP = "Salesforce/blip-vqa-capfilt-large"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"

ATTRIBUTE_CATEGORIES = ("color", "shape", "texture")

# T2I-CompBench's BLIP_vqa.py: phrases it never asks about, and how many it asks at most (--np_num).
SKIPPED_PHRASES = ("top", "the side", "the left", "the right")
MAX_PHRASES = 8

# T2I-CompBench's 2D_spatial_eval.py: determine_position's thresholds, UniDet's confidence
# cut-off, and the frame its boxes are in (the image resized to a short side of 479, long side at most 480).
IOU_THRESHOLD = 0.1
DISTANCE_THRESHOLD = 150.0
UNIDET_SHORT_SIDE, UNIDET_MAX_SIDE = 479, 480
# OWLv2's sigmoid scores run far lower than UniDet's softmax ones; 0.1 is the cut-off of its model card.
DEFAULT_DETECTOR_THRESHOLD = 0.1

CLIPSCORE_WEIGHT = 2.5
CLIPSCORE_PREFIX = "A photo depicts "


class ScorerLoadError(RuntimeError):
    """A scorer model that cannot be loaded; the message says how to get it."""


def load_pretrained(name: str, model_class, processor_class, what: str):
    """(model, processor) from a Hugging Face id or a local folder, through from_pretrained.

    A failure raises ScorerLoadError saying what was asked for and how to get it onto a
    machine without access to the Hub.
    """
    try:
        processor = processor_class.from_pretrained(name)
        model = model_class.from_pretrained(name)
    except Exception as e:  # offline, no such id, not a model folder: all need the same advice
        cause = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if os.path.isdir(name):
            raise ScorerLoadError(
                f"cannot load the {what} model from the folder {name}: it should hold what save_pretrained "
                f"writes (config.json, the weights and the processor's files), as `hf download <id> --local-dir "
                f"{name}` leaves it. ({cause})") from e
        raise ScorerLoadError(
            f"cannot load the {what} model '{name}': it is not a local folder, and the Hugging Face Hub did not "
            f"provide it (offline, HF_HUB_OFFLINE=1, or no such id). On a machine with internet access run "
            f"`hf download {name} --local-dir {_folder_name(name)}` (older huggingface_hub: "
            f"`huggingface-cli download {name} --local-dir {_folder_name(name)}`), copy that folder here and "
            f"give its path in place of the id. ({cause})") from e
    return model, processor


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name.rsplit("/", 1)[-1]) or "model"


# --- spatial: T2I-CompBench's rule, pure ------------------------------------------------------

def relation_score(relation: str, box_a, box_b, iou_threshold: float = IOU_THRESHOLD,
                   distance_threshold: float = DISTANCE_THRESHOLD) -> float:
    """T2I-CompBench's determine_position: how well A's box stands in `relation` to B's, 0 to 1.

    Boxes are (x_min, y_min, x_max, y_max) in UniDet's frame (see `to_unidet_frame`), y down.
    "On the left of": B's centre is right of A's, more apart across than up or down, scored 1
    while the boxes overlap with IoU under 0.1 and iou_threshold / IoU above it; the others
    alike. "Next to", "near", "on side of": 1 while the centres are within distance_threshold
    on either axis, else distance_threshold over the larger distance. "On top of" is read as
    T2I-CompBench's "on the top of" (its code finds the words but scores them 0 by omission).
    """
    ax0, ay0, ax1, ay1 = (float(v) for v in box_a[:4])
    bx0, by0, bx1, by1 = (float(v) for v in box_b[:4])
    x_distance = (bx0 + bx1) / 2 - (ax0 + ax1) / 2
    y_distance = (by0 + by1) / 2 - (ay0 + ay1) / 2
    intersection = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - intersection
    iou = intersection / union if union > 0 else 0.0

    def apart(along: float, across: float) -> float:
        if abs(along) <= abs(across):
            return 0.0
        return 1.0 if iou < iou_threshold else iou_threshold / iou

    if relation in ("next to", "on side of", "near"):
        if abs(x_distance) < distance_threshold or abs(y_distance) < distance_threshold:
            return 1.0
        return distance_threshold / max(abs(x_distance), abs(y_distance))
    if relation == "on the right of":
        return apart(x_distance, y_distance) if x_distance < 0 else 0.0
    if relation == "on the left of":
        return apart(x_distance, y_distance) if x_distance > 0 else 0.0
    if relation == "on the bottom of":
        return apart(y_distance, x_distance) if y_distance < 0 else 0.0
    if relation in ("on the top of", "on top of"):
        return apart(y_distance, x_distance) if y_distance > 0 else 0.0
    return 0.0


def spatial_score(boxes_a, boxes_b, relation: str) -> float:
    """T2I-CompBench's spatial score of one image from the detections of its two objects.

    boxes_a, boxes_b: the detections of object A and of object B, each (x_min, y_min, x_max,
    y_max, confidence) in UniDet's frame; the most confident of each is taken, as UniDet's
    first. Both found: 0.25·conf_A + 0.25·conf_B + relation_score / 2; one found: 0.25·its
    confidence; none: 0. A score under 0.5 counts as 0, so an image scores only when both
    objects are found in the relation.
    """
    best_a = max(boxes_a, key=lambda box: box[4], default=None)
    best_b = max(boxes_b, key=lambda box: box[4], default=None)
    if best_a is not None and best_b is not None:
        score = 0.25 * float(best_a[4]) + 0.25 * float(best_b[4]) + relation_score(relation, best_a, best_b) / 2
    elif best_a is not None or best_b is not None:
        score = 0.25 * float((best_a or best_b)[4])
    else:
        score = 0.0
    return score if score >= 0.5 else 0.0


def to_unidet_frame(boxes, width: int, height: int) -> list:
    """Boxes in image pixels scaled to the frame UniDet saw in T2I-CompBench: the image resized
    to a short side of 479 with the long side at most 480 (torchvision Resize(479, max_size=480)),
    which is the scale its 150-pixel distance threshold is in."""
    short, long = min(width, height), max(width, height)
    scale = UNIDET_SHORT_SIDE / short
    if long * scale > UNIDET_MAX_SIDE:
        scale = UNIDET_MAX_SIDE / long
    return [(b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale, *b[4:]) for b in boxes]


# --- attribute: BLIP-VQA ---------------------------------------------------------------------

def blip_phrases(prompt: str) -> list:
    """The noun phrases T2I-CompBench asks BLIP-VQA about, in order."""
    return [p for p in noun_phrases(prompt) if p not in SKIPPED_PHRASES][:MAX_PHRASES]


def blip_question(phrase: str) -> str:
    """T2I-CompBench's question for a phrase: "<phrase>?" through BLIP's pre_question."""
    question = re.sub(r"([.!\"()*#:;~])", "", f"{phrase}?".lower()).rstrip(" ")
    return " ".join(question.split(" ")[:50])


class BlipVqa:
    """BLIP-VQA's P(yes) for (image, question) pairs, as T2I-CompBench's vqa_prob."""

    def __init__(self, name: str, device: str, batch_size: int = 8):
        from transformers import BlipForQuestionAnswering, BlipProcessor

        self.name, self.device, self.batch_size = name, device, batch_size
        model, self.processor = load_pretrained(name, BlipForQuestionAnswering, BlipProcessor, "BLIP-VQA")
        self.model = model.to(device).eval()
        tokenizer, text_config = self.processor.tokenizer, self.model.config.text_config
        self.bos_id = text_config.bos_token_id  # [DEC], the decoder's start
        self.enc_id = _token_id(tokenizer, "[ENC]", fallback=self.bos_id + 1)
        self.yes_id = _token_id(tokenizer, "yes")
        self.no_id = _token_id(tokenizer, "no")

    def question_ids(self, question: str) -> list:
        """Token ids of a question as BLIP's VQA model reads it: [ENC] in place of [CLS], at most 35."""
        ids = self.processor.tokenizer(question, truncation=True, max_length=35)["input_ids"]
        return [self.enc_id] + list(ids[1:])

    def p_yes(self, pairs) -> list:
        """P(yes) for each (PIL image, question) pair."""
        import torch

        results = [None] * len(pairs)
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start:start + self.batch_size]
            images = list(dict.fromkeys(id(image) for image, _ in chunk))
            by_id = {id(image): image for image, _ in chunk}
            with torch.no_grad():
                pixels = self.processor.image_processor([_rgb(by_id[i]) for i in images], return_tensors="pt")
                image_embeds = self.model.vision_model(pixel_values=pixels["pixel_values"].to(self.device))[0]
                # Questions of one length go together: no padding, so no reliance on its mask.
                groups = {}
                for k, (image, question) in enumerate(chunk):
                    ids = self.question_ids(question)
                    groups.setdefault(len(ids), []).append((k, images.index(id(image)), ids))
                for group in groups.values():
                    ks, rows, ids = zip(*group)
                    probs = self._p_yes(image_embeds[list(rows)], torch.tensor(ids, device=self.device))
                    for k, p in zip(ks, probs):
                        results[start + k] = p
        return results

    def _p_yes(self, image_embeds, input_ids) -> list:
        import torch

        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        question_mask = torch.ones_like(input_ids)
        question_states = self.model.text_encoder(
            input_ids=input_ids, attention_mask=question_mask,
            encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask)[0]
        start = torch.full((input_ids.shape[0], 1), self.bos_id, dtype=torch.long, device=self.device)
        logits = self.model.text_decoder(
            input_ids=start, encoder_hidden_states=question_states, encoder_attention_mask=question_mask).logits
        log_probs = torch.log_softmax(logits[:, 0, :].float(), dim=-1)
        # p(yes) / (p(yes) + p(no)), written so that tiny probabilities do not underflow
        return torch.sigmoid(log_probs[:, self.yes_id] - log_probs[:, self.no_id]).tolist()


def _token_id(tokenizer, token: str, fallback=None) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == tokenizer.unk_token_id:
        if fallback is None:
            raise ScorerLoadError(f"the BLIP-VQA tokenizer has no token '{token}'; T2I-CompBench's score needs it")
        return fallback  # BLIP's own tokenizer adds [DEC], then [ENC]
    return token_id


def _rgb(image):
    return image if image.mode == "RGB" else image.convert("RGB")


# --- CLIPScore --------------------------------------------------------------------------------

class ClipScore:
    """CLIPScore of (image, text) pairs: 2.5 · max(cos, 0), the text prefixed as in Hessel et al."""

    def __init__(self, name: str, device: str, batch_size: int = 8):
        from transformers import CLIPModel, CLIPProcessor

        self.name, self.device, self.batch_size = name, device, batch_size
        model, self.processor = load_pretrained(name, CLIPModel, CLIPProcessor, "CLIP")
        self.model = model.to(device).eval()

    def embeddings(self, images, texts):
        """Unit image and text embeddings (image_embeds, text_embeds) of one batch."""
        import torch

        tokens = self.processor.tokenizer([CLIPSCORE_PREFIX + t for t in texts], padding=True, truncation=True,
                                          max_length=self.model.config.text_config.max_position_embeddings,
                                          return_tensors="pt").to(self.device)
        pixels = self.processor.image_processor([_rgb(i) for i in images], return_tensors="pt")
        with torch.no_grad():
            text = self.model.text_projection(self.model.text_model(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).pooler_output)
            image = self.model.visual_projection(self.model.vision_model(
                pixel_values=pixels["pixel_values"].to(self.device)).pooler_output)
        return (torch.nn.functional.normalize(image.float(), dim=-1),
                torch.nn.functional.normalize(text.float(), dim=-1))

    def scores(self, pairs) -> list:
        out = []
        for start in range(0, len(pairs), self.batch_size):
            images, texts = zip(*pairs[start:start + self.batch_size])
            image, text = self.embeddings(images, texts)
            out += (CLIPSCORE_WEIGHT * (image * text).sum(-1).clamp(min=0)).tolist()
        return out


# --- spatial: detection -----------------------------------------------------------------------

class ZeroShotDetector:
    """Boxes of named objects from OWLv2 (or OWL-ViT): per box the best-matching name, as a
    closed-vocabulary detector labels its boxes, kept above a confidence threshold."""

    def __init__(self, name: str, device: str, batch_size: int = 8, threshold: float = DEFAULT_DETECTOR_THRESHOLD):
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.name, self.device, self.batch_size, self.threshold = name, device, batch_size, threshold
        model, self.processor = load_pretrained(name, AutoModelForZeroShotObjectDetection, AutoProcessor,
                                                "zero-shot detector")
        self.model_type = model.config.model_type
        if self.model_type not in ("owlv2", "owlvit"):
            raise ScorerLoadError(f"the detector '{name}' is a {self.model_type} model; the spatial scorer reads "
                                  "OWLv2 or OWL-ViT outputs (e.g. google/owlv2-base-patch16-ensemble)")
        self.model = model.to(device).eval()

    def detect(self, images, names) -> list:
        """For each image and its object names, {name: [(x_min, y_min, x_max, y_max, confidence), ...]}
        in image pixels, most confident first."""
        import torch

        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [_rgb(i) for i in images[start:start + self.batch_size]]
            queries = [list(dict.fromkeys(n)) for n in names[start:start + self.batch_size]]
            width = max(len(q) for q in queries)
            text = [[f"a photo of a {n}" for n in q] + [" "] * (width - len(q)) for q in queries]
            inputs = self.processor(text=text, images=batch, return_tensors="pt").to(self.device)
            with torch.no_grad():
                result = self.model(**inputs)
            logits, labels = result.logits.float().max(dim=-1)  # the best name by logit: sigmoid ties at 1
            scores = torch.sigmoid(logits)
            for i, image in enumerate(batch):
                boxes = self._pixel_boxes(result.pred_boxes[i].float(), *image.size)
                found = {n: [] for n in queries[i]}
                for j in torch.nonzero(scores[i] > self.threshold).flatten().tolist():
                    q = labels[i, j].item()
                    if q < len(queries[i]):
                        found[queries[i][q]].append((*boxes[j].tolist(), scores[i, j].item()))
                out.append({n: sorted(found[n], key=lambda b: -b[4]) for n in names[start + i]})
        return out

    def _pixel_boxes(self, boxes, width: int, height: int):
        import torch

        # (cx, cy, w, h) relative to the model's input: OWLv2 pads the image to a square at its
        # bottom and right, OWL-ViT stretches it.
        scale_x, scale_y = (max(width, height),) * 2 if self.model_type == "owlv2" else (width, height)
        cx, cy, w, h = boxes.unbind(-1)
        return torch.stack([(cx - w / 2) * scale_x, (cy - h / 2) * scale_y,
                            (cx + w / 2) * scale_x, (cy + h / 2) * scale_y], dim=-1)


# --- the entry point --------------------------------------------------------------------------

class Scorers:
    """Scores for (image, Prompt) items: "clip" for every item, and "attribute" for color, shape
    and texture or "spatial" for spatial prompts. Models load on first use, only those needed.
    Pass None for a model to leave its score out."""

    def __init__(self, blip=DEFAULT_BLIP, clip=DEFAULT_CLIP, detector=DEFAULT_DETECTOR, device=None,
                 batch_size: int = 8, detector_threshold: float = DEFAULT_DETECTOR_THRESHOLD):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        self.blip, self.clip, self.detector = blip, clip, detector
        self.device = device or _default_device()
        self.batch_size, self.detector_threshold = batch_size, detector_threshold
        self._models = {}

    def _model(self, kind: str):
        if kind not in self._models:
            if kind == "blip":
                self._models[kind] = BlipVqa(self.blip, self.device, self.batch_size)
            elif kind == "clip":
                self._models[kind] = ClipScore(self.clip, self.device, self.batch_size)
            else:
                self._models[kind] = ZeroShotDetector(self.detector, self.device, self.batch_size,
                                                      self.detector_threshold)
        return self._models[kind]

    def score(self, items) -> list:
        """For each (PIL image, Prompt) item, a dict of its scores (see the class doc)."""
        results = [{} for _ in items]
        attribute = [k for k, (_, p) in enumerate(items) if p.category in ATTRIBUTE_CATEGORIES]
        spatial = [k for k, (_, p) in enumerate(items) if p.category == "spatial"]
        relations = {k: spatial_relation(items[k][1].text) for k in spatial}
        unparsed = [items[k][1].text for k in spatial if relations[k] is None]
        if unparsed and self.detector:
            raise ValueError(f"{len(unparsed)} spatial prompt(s) name no two objects around a relation such as "
                             f"'on the left of', e.g. '{unparsed[0]}'; score them as category 'other'")
        if self.clip:
            for k, s in enumerate(self._model("clip").scores([(image, p.text) for image, p in items])):
                results[k]["clip"] = s
        if self.blip and attribute:
            self._score_attributes(items, attribute, results)
        if self.detector and spatial:
            detections = self._model("detector").detect(
                [items[k][0] for k in spatial], [(relations[k][0], relations[k][2]) for k in spatial])
            for k, found in zip(spatial, detections):
                a, relation, b = relations[k]
                width, height = items[k][0].size
                results[k]["spatial"] = spatial_score(to_unidet_frame(found[a], width, height),
                                                      to_unidet_frame(found[b], width, height), relation)
        return results

    def _score_attributes(self, items, indices, results):
        pairs, owners = [], []
        for k in indices:
            for phrase in blip_phrases(items[k][1].text):
                pairs.append((items[k][0], blip_question(phrase)))
                owners.append(k)
            results[k]["attribute"] = 1.0  # T2I-CompBench counts a missing question as 1
        for k, p in zip(owners, self._model("blip").p_yes(pairs)):
            results[k]["attribute"] *= p

    def describe(self) -> dict:
        """The models and methods behind each score, for the report; loads nothing."""
        import transformers

        return {
            "device": self.device,
            "transformers": transformers.__version__,
            "scores": {"color": ["clip", "attribute"], "shape": ["clip", "attribute"],
                       "texture": ["clip", "attribute"], "spatial": ["clip", "spatial"], "other": ["clip"]},
            "attribute": {
                "model": self.blip,
                "method": "T2I-CompBench BLIP-VQA: one question '<noun phrase>?' per noun phrase (at most "
                          f"{MAX_PHRASES}; {', '.join(repr(p) for p in SKIPPED_PHRASES)} skipped); P(yes) = "
                          "p(yes) / (p(yes) + p(no)) at the decoder's first answer token; the score is the "
                          "product over the phrases; questions start with BLIP's [ENC] token as in BLIP's own "
                          "VQA code; images at the checkpoint processor's size (384 for the Hugging Face "
                          "conversion; T2I-CompBench's original BLIP ran at 480)",
                "phrases": phrase_source(),
            },
            "spatial": {
                "detector": self.detector,
                "threshold": self.detector_threshold,
                "method": "T2I-CompBench UniDet_eval rule: the most confident box of each object; "
                          "0.25 * each confidence + position score / 2, under 0.5 counts as 0; position from "
                          f"the box centres (IoU threshold {IOU_THRESHOLD}, distance threshold "
                          f"{DISTANCE_THRESHOLD:g} px at UniDet's {UNIDET_SHORT_SIDE}-pixel scale)",
                "differs": f"T2I-CompBench detects with UniDet; here {self.detector} does, with its own "
                           "confidences, so spatial scores compare settings with each other, not with the "
                           "paper's absolute values",
            },
            "clip": {
                "model": self.clip,
                "method": f"CLIPScore (Hessel et al. 2021): {CLIPSCORE_WEIGHT} * max(cos, 0) between the image "
                          f"and '{CLIPSCORE_PREFIX}<prompt>'",
            },
        }


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
