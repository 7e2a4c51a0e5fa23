"""GGUF files of the tests' FLUX.1-dev and SD3.5-Medium (model_files.py), as ComfyUI-GGUF makes them.

ComfyUI-GGUF makes a quantized file in two steps: its tools/convert.py writes an F16 or BF16
GGUF, and its patched llama.cpp (tools/lcpp.patch) quantizes that. quantized_file() does both
in one pass with the `gguf` package's own writer and quantizer (its Python writes Q8_0, Q4_0
and Q4_1, no K-quants), and gives every tensor the type those two steps give it:

- convert.py: BF16 tensors stay BF16, other floating tensors become F16; from F32 or BF16, a
  one-dimensional tensor and one of at most 1024 values stay F32.
- the quantizer: a tensor is quantized when its name ends in "weight" and it has two
  dimensions, except those each architecture keeps (KEPT below: FLUX's input, time, guidance
  and final layers; SD3's embedders, final layer, proj_out and pos_embed, which convert.py
  wrote in F16). It reads the converted F16/BF16 values. At Q4_0 the feed-forward down
  projections it knows by name are written Q4_1.

The files are cached beside model_files' cache, keyed by GGUF_VERSION and model_files'
CACHE_VERSION, under the folder layout ComfyUI reads (diffusion_models/).
"""

from pathlib import Path

import gguf
import numpy as np
import safetensors.torch
import torch

import model_files

GGUF_VERSION = "1"
CACHE = model_files.CACHE.parent / f"comfyui-taca-test-gguf-v{GGUF_VERSION}-{model_files.CACHE_VERSION}"

QUANT_TYPES = ("Q8_0", "Q4_0")
FILE_TYPES = {"Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}
SMALL_TENSOR = 1024  # convert.py's QUANTIZATION_THRESHOLD: at most this many values stay F32

# lcpp.patch, llama_model_quantize_internal, "rules for image models": name parts and whole names kept as converted
KEPT = {
    "flux": (("txt_in.", "img_in.", "time_in.", "vector_in.", "guidance_in.", "final_layer."), ()),
    "sd3": (("final_layer.", "time_text_embed.", "context_embedder.", "t_embedder.", "y_embedder.", "x_embedder."),
            ("proj_out.weight", "pos_embed")),
}
# lcpp.patch, img_tensor_get_type, "Rules for ffn": written Q4_1 where the file type is Q4_0
FFN_DOWN = ("ffn_down", ".ffn.2.weight", ".ff.net.2.weight", ".mlp.layer2.weight", ".adaln_modulation_mlp.2.weight",
            ".feed_forward.w2.weight")

# (source file in model_files' cache, key prefix of its diffusion model, GGUF architecture)
SOURCES = {
    "flux1-dev": (model_files.FLUX_UNET, "", "flux"),
    "sd3.5_medium": (model_files.SD35_MEDIUM, "model.diffusion_model.", "sd3"),
}


def file_name(model: str, quant: str) -> str:
    return f"{model}-{quant}.gguf"


def converted_type(key: str, tensor: torch.Tensor) -> gguf.GGMLQuantizationType:
    """The type tools/convert.py writes a tensor in."""
    if tensor.dtype in (torch.float32, torch.bfloat16) and (tensor.ndim == 1 or tensor.numel() <= SMALL_TENSOR):
        return gguf.GGMLQuantizationType.F32
    return gguf.GGMLQuantizationType.BF16 if tensor.dtype == torch.bfloat16 else gguf.GGMLQuantizationType.F16


def quantized_type(key: str, tensor: torch.Tensor, arch: str, quant: str) -> gguf.GGMLQuantizationType:
    """The type the patched llama.cpp gives a tensor at file type `quant`."""
    parts, names = KEPT[arch]
    if not key.endswith("weight") or tensor.ndim != 2 or any(p in key for p in parts) or key in names:
        return converted_type(key, tensor)
    if quant == "Q4_0" and (any(p in key for p in FFN_DOWN) or ("experts." in key and ".w2.weight" in key)):
        return gguf.GGMLQuantizationType.Q4_1
    return gguf.GGMLQuantizationType[quant]


def as_converted(tensor: torch.Tensor, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """The tensor's float32 values as the converted F16/BF16/F32 file holds them."""
    rounded = {gguf.GGMLQuantizationType.BF16: torch.bfloat16, gguf.GGMLQuantizationType.F16: torch.float16}
    return tensor.to(rounded.get(qtype, torch.float32)).float().numpy()


def write_quantized(state_dict: dict, arch: str, quant: str, path: Path) -> dict:
    """Write `state_dict` to a GGUF file at `path`; the type of each tensor."""
    writer = gguf.GGUFWriter(path=None, arch=arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_file_type(FILE_TYPES[quant])
    types = {}
    for key, tensor in state_dict.items():
        base, target = converted_type(key, tensor), quantized_type(key, tensor, arch, quant)
        values = as_converted(tensor, base)
        try:
            data = gguf.quants.quantize(values, target)
        except gguf.QuantError:  # rows that do not fill whole blocks: kept as converted
            target = base
            data = gguf.quants.quantize(values, target)
        writer.add_tensor(key, data, raw_dtype=target)
        types[key] = target.name
    writer.write_header_to_file(path=str(path))
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return types


def tensor_types(path: Path) -> dict:
    """The GGML type of each tensor in a GGUF file, by name."""
    return {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


def diffusion_model_state_dict(model: str) -> tuple:
    """The diffusion model's tensors in the test file, its prefix stripped, and its architecture."""
    rel, prefix, arch = SOURCES[model]
    sd = safetensors.torch.load_file(str(model_files.model_files() / rel))
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, arch


def gguf_files() -> Path:
    """The folder holding diffusion_models/<model>-<quant>.gguf for every model and type, built on first use."""
    def build(staging: Path) -> None:
        (staging / "diffusion_models").mkdir()
        for model in SOURCES:
            state_dict, arch = diffusion_model_state_dict(model)
            for quant in QUANT_TYPES:
                write_quantized(state_dict, arch, quant, staging / "diffusion_models" / file_name(model, quant))

    return model_files.built_folder(CACHE, GGUF_VERSION, build)
