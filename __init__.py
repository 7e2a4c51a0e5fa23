"""ComfyUI-TACA: Temperature-Adjusted Cross-modal Attention for the MM-DiT models in ComfyUI.

ComfyUI entry point: registers the nodes and the frontend extension in web/ that sizes them
to show their whole titles, nothing else.
"""

from comfy_api.latest import ComfyExtension, io

from .nodes.balance_nodes import TACABalancePlot, TACABalanceProbe
from .nodes.lora_node import TACALoraLoader
from .nodes.taca_node import TACA, TACAAdvanced

WEB_DIRECTORY = "./web"


class TACAExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [TACA, TACAAdvanced, TACALoraLoader, TACABalanceProbe, TACABalancePlot]


async def comfy_entrypoint() -> TACAExtension:
    return TACAExtension()
