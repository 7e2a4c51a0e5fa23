"""ComfyUI-TACA: Temperature-Adjusted Cross-modal Attention for FLUX.1, SD3 and SD3.5.

ComfyUI entry point: registers the nodes, nothing else.
"""

from comfy_api.latest import ComfyExtension, io

from .nodes.lora_node import TACALoraLoader
from .nodes.taca_node import TACA


class TACAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TACA, TACALoraLoader]


async def comfy_entrypoint() -> TACAExtension:
    return TACAExtension()
