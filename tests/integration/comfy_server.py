"""The ComfyUI server that the workflow and browser tests share.

A real ComfyUI (the one conftest.py imported) runs as a child process on 127.0.0.1 with
--base-directory pointing at a temporary folder that holds this pack (custom_nodes/ComfyUI-TACA,
a symlink), the other packs found under TACA_PEER_PACKS (peer_packs.py, symlinks beside it)
and the test model files (model_files.py). It is started once per test session
and stopped by its PID; its log is kept in test-artifacts/.
"""

import io
import json
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import safetensors.torch
from PIL import Image

import folder_paths  # ComfyUI's own module, imported by conftest.py: its folder is the ComfyUI to run
import model_files
import peer_packs

PACK = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PACK / "tools"))
from comfy_http import ComfyClient, start_server, stop_server  # noqa: E402
from taca_compare import is_empty_latent  # noqa: E402
from workflow_api import BYPASSED, to_api_prompt  # noqa: E402

COMFYUI = Path(folder_paths.__file__).resolve().parent
PACK_FOLDER = "ComfyUI-TACA"  # its name under custom_nodes/, which names its template route
WORKFLOWS = PACK / "workflows"
SIDE_BY_SIDE = "taca_flux_dev_side_by_side"
BALANCE = "taca_attention_balance"
ARTIFACTS = PACK / "test-artifacts"
SERVER_ARGS = ("--cpu", "--database-url", "sqlite:///:memory:", "--disable-api-nodes")
# Frontend settings for a clean first visit: no welcome template browser; the minimap, the
# dialogs and link validation under test stay on (their defaults).
FRONTEND_SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Validation.Workflows": True,
    "Comfy.Workflow.ShowMissingNodesWarning": True,
    "Comfy.Workflow.ShowMissingModelsWarning": True,
}
# The smallest run that still has TACA's window: σ = 1 on step 1 (t = 1000 ≥ 970), below after.
TEST_SIZE, TEST_STEPS = 64, 2


class SharedComfyUI:
    """A ComfyUI server process with its base folder; url, client, object_info, comfyui_version."""

    def __init__(self, setup=None):
        """setup(base folder), if given, adds to the base folder before the server starts."""
        self.base = Path(tempfile.mkdtemp(prefix="comfyui-taca-server-"))
        (self.base / "custom_nodes").mkdir()
        (self.base / "custom_nodes" / PACK_FOLDER).symlink_to(PACK)
        for pack in peer_packs.PEER_PACKS:
            if (path := peer_packs.pack_path(pack)) is not None:
                (self.base / "custom_nodes" / pack.folder).symlink_to(path)
        model_files.install(self.base / "models")
        settings = self.base / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True)
        settings.write_text(json.dumps(FRONTEND_SETTINGS))
        if setup is not None:
            setup(self.base)
        self.log = self.base / "comfyui.log"
        try:
            self.process, self.url = start_server(
                str(COMFYUI), 0, [*SERVER_ARGS, "--base-directory", str(self.base)], sys.executable, str(self.log),
            )
        except BaseException:
            self._clean_up()
            raise
        self.client = ComfyClient(self.url)
        self.object_info = self.client.object_info()
        self.comfyui_version = self.client.get("/system_stats")["system"]["comfyui_version"]

    def stop(self):
        stop_server(self.process)
        self._clean_up()

    def _clean_up(self):
        ARTIFACTS.mkdir(exist_ok=True)
        if self.log.exists():
            shutil.copy(self.log, ARTIFACTS / "comfyui-server.log")
        shutil.rmtree(self.base, ignore_errors=True)

    def run(self, prompt: dict) -> dict:
        """Execute an API prompt; its /history entry."""
        return self.client.run(prompt, timeout=600)

    def files(self, entry: dict, node_id: str, kind: str = "images") -> list:
        return [self.client.view(f) for f in entry["outputs"][node_id][kind]]

    def image(self, entry: dict, node_id: str) -> np.ndarray:
        (png,) = self.files(entry, node_id)
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def latent(self, entry: dict, node_id: str):
        (data,) = self.files(entry, node_id, "latents")
        return safetensors.torch.load(data)["latent_tensor"]

    def forget_results(self) -> None:
        """Drop ComfyUI's cached node outputs and loaded models, so the next prompt runs from scratch.

        /free only sets flags that the queue worker reads after its next prompt, so a trivial
        prompt follows it."""
        self.client.post("/free", {"unload_models": True, "free_memory": True})
        self.run({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        })

    def small_run(self, workflow: dict, bypass=()) -> dict:
        """A shipped workflow as the tests run it: text encoders substituted, node types in
        `bypass` bypassed (as Ctrl+B does), converted to the API format, 64×64, two steps."""
        workflow = model_files.substitute_text_encoders(workflow)
        for node in workflow["nodes"]:
            if node["type"] in bypass:
                node["mode"] = BYPASSED
        prompt = to_api_prompt(workflow, self.object_info)
        for node in prompt.values():
            inputs = node["inputs"]
            if is_empty_latent(node):
                inputs["width"] = inputs["height"] = TEST_SIZE
            if "steps" in inputs:
                inputs["steps"] = TEST_STEPS
        return prompt


_shared = {"server": None, "users": 0}


@contextmanager
def shared_server():
    """The session's SharedComfyUI, started on first use and stopped when its last user is done."""
    if _shared["server"] is None:
        _shared["server"] = SharedComfyUI()
    _shared["users"] += 1
    try:
        yield _shared["server"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["server"].stop()
            _shared["server"] = None


def load_workflow(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))


SHIPPED = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
