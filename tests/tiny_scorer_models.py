"""Tiny random BLIP-VQA, CLIP and OWLv2 models, built from transformers configurations and
saved with save_pretrained, so that the scorers load them by path exactly as they load a
Hugging Face id. Their scores mean nothing; they exercise the plumbing and the math.
"""

import json
from pathlib import Path

import torch

# Words of the tests' prompts and questions, for the BLIP tokenizer's WordPiece vocabulary.
WORDS = """yes no a an the red yellow green blue book vase bench bowl bathroom tile shower curtain
    round bagel rectangular cutting board dog chair cat left right top of on and with photo depicts""".split()
SIZE = 32  # image side of the BLIP and CLIP models; OWLv2 takes 2 * SIZE


def _bert_tokenizer_files(folder: Path) -> dict:
    """A BERT WordPiece vocabulary with BLIP's two extra tokens, [DEC] and [ENC], at its end."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", ".", *WORDS, "[DEC]", "[ENC]"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512}))
    return {token: i for i, token in enumerate(vocab)}


def _clip_tokenizer_files(folder: Path) -> dict:
    """A character-level CLIP BPE vocabulary (no merges), start and end tokens last, as in CLIP."""
    vocab = {}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789?.,!'-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 32}))
    return vocab


def _tiny_layers(hidden: int = 32) -> dict:
    return {"hidden_size": hidden, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2}


def build_blip_vqa(folder: Path, seed: int = 0) -> Path:
    from transformers import (BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipImageProcessor,
                              BlipProcessor)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _bert_tokenizer_files(folder)
    tokenizer = BertTokenizer.from_pretrained(folder)
    config = BlipConfig(
        text_config={**_tiny_layers(), "vocab_size": len(vocab), "encoder_hidden_size": 32,
                     "max_position_embeddings": 64, "pad_token_id": vocab["[PAD]"], "bos_token_id": vocab["[DEC]"],
                     "sep_token_id": vocab["[SEP]"], "label_smoothing": 0.0},
        vision_config={**_tiny_layers(), "image_size": SIZE, "patch_size": 8},
    )
    torch.manual_seed(seed)
    BlipForQuestionAnswering(config).save_pretrained(folder)
    image_processor = BlipImageProcessor(size={"height": SIZE, "width": SIZE})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _clip_text_config(vocab: dict) -> dict:
    """The text tower of CLIP and OWLv2 over the tiny CLIP vocabulary."""
    return {**_tiny_layers(), "vocab_size": len(vocab), "max_position_embeddings": 32,
            "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
            "pad_token_id": vocab["<|endoftext|>"]}


def build_clip(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    config = CLIPConfig(
        text_config=_clip_text_config(vocab),
        vision_config={**_tiny_layers(), "image_size": SIZE, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_owlv2(folder: Path, seed: int = 0) -> Path:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    config = Owlv2Config(
        text_config=_clip_text_config(vocab),
        vision_config={**_tiny_layers(), "image_size": 2 * SIZE, "patch_size": 16},
        projection_dim=32,  # OWL compares text embeddings with image features of the text width
    )
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    image_processor = Owlv2ImageProcessor(size={"height": 2 * SIZE, "width": 2 * SIZE})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
