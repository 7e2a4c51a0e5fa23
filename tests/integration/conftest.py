"""Integration tests: the TACA node inside a real ComfyUI, in-process, on the CPU.

ComfyUI is found through the COMFYUI_PATH environment variable, or as the grandparent
folder when this pack sits in ComfyUI/custom_nodes/. Without it every test in this
folder is skipped. The pack is loaded the way ComfyUI loads a custom node, and the
tests use the TACA node from ComfyUI's NODE_CLASS_MAPPINGS, never the pack's modules.
"""

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
import torch

PACK = Path(__file__).absolute().parents[2]  # not resolved: a symlinked pack sits where ComfyUI sees it


def is_comfyui(path: Path) -> bool:
    return (path / "nodes.py").is_file() and (path / "comfy" / "model_management.py").is_file()


def find_comfyui():
    """The ComfyUI folder, None when there is none, or an error for a COMFYUI_PATH that is not one."""
    configured = os.environ.get("COMFYUI_PATH")
    if configured:
        if not is_comfyui(Path(configured)):
            raise pytest.UsageError(f"COMFYUI_PATH={configured} is not a ComfyUI folder (no nodes.py, comfy/).")
        return Path(configured).resolve()
    if PACK.parent.name == "custom_nodes" and is_comfyui(PACK.parent.parent):
        return PACK.parent.parent
    return None


def import_comfyui(path: Path):
    """Import ComfyUI in-process on the CPU and load this pack into it as a custom node."""
    sys.path.insert(0, str(path))
    from comfy.cli_args import args

    args.cpu = True  # read when comfy.model_management is first imported
    import utils.extra_config  # noqa: F401  before nodes.py, which puts comfy/ first on sys.path
    import nodes

    if not asyncio.run(nodes.load_custom_node(str(PACK))):
        raise RuntimeError(f"ComfyUI could not load the pack at {PACK}; its log says why.")
    load_peer_packs(nodes)


class ImportFailures(logging.Handler):
    """Why ComfyUI could not import a custom node, from the traceback it logs: the pack's
    file and line where the import failed, and the error."""

    def __init__(self, folder: Path):
        super().__init__(logging.WARNING)
        self.folder, self.reason = folder, None

    def emit(self, record):
        message = record.getMessage()
        if not message.startswith("Traceback"):
            return
        lines = message.strip().splitlines()
        frames = [line.strip() for line in lines if line.strip().startswith(f'File "{self.folder}')]
        where = frames[-1].replace(f'File "{self.folder}/', "").replace('",', ",") + ": " if frames else ""
        self.reason = where + lines[-1]


def load_peer_packs(nodes) -> None:
    """Load the packs found under TACA_PEER_PACKS with ComfyUI's loader; record in
    peer_packs.LOADED which loaded, and why the others did not."""
    import peer_packs

    for pack in peer_packs.PEER_PACKS:
        path = peer_packs.pack_path(pack)
        if path is None:
            continue
        failures = ImportFailures(path)
        logging.getLogger().addHandler(failures)
        try:
            loaded = asyncio.run(nodes.load_custom_node(str(path)))
        finally:
            logging.getLogger().removeHandler(failures)
        version = comfyui_version()
        peer_packs.LOADED[pack.folder] = None if loaded else (
            f"{pack.folder} does not load on ComfyUI {version}: "
            f"{failures.reason or 'see the log'}")


def comfyui_version() -> str:
    try:
        import comfyui_version
    except ImportError:
        return "(version unknown)"
    return comfyui_version.__version__


def pytest_report_header(config):
    import peer_packs

    if peer_packs.peer_folder() is None:
        return None
    lines = [f"peer packs ({peer_packs.ENV}={peer_packs.peer_folder()}):"]
    for pack in peer_packs.PEER_PACKS:
        path = peer_packs.pack_path(pack)
        state = ("absent" if path is None else f"at {peer_packs.checked_out(path)}, "
                 + ("loaded" if peer_packs.LOADED.get(pack.folder, "") is None else "not loaded"))
        lines.append(f"  {pack.folder} (tests name {pack.commit[:12]}): {state}")
    return lines


COMFYUI = find_comfyui()
if COMFYUI is not None:
    import_comfyui(COMFYUI)
    # The tiny models run fastest on one thread, and torch's worker threads slow to a crawl
    # (ten times and more) when other processes hold the cores.
    torch.set_num_threads(1)


class WithoutComfyUI(pytest.Module):
    """A test module reported as skipped, never imported: its imports need ComfyUI."""

    def collect(self):
        pytest.skip("ComfyUI not found: set COMFYUI_PATH to a ComfyUI folder, or place this pack in ComfyUI/custom_nodes/.")


def pytest_pycollect_makemodule(module_path, parent):
    # A module-level skip in this file would not do: pytest cannot skip a conftest it loads
    # at start-up, which it does when the tests are named by a path inside this folder.
    if COMFYUI is None:
        return WithoutComfyUI.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def taca_node():
    """The TACA node class, as ComfyUI registered it."""
    import nodes

    return nodes.NODE_CLASS_MAPPINGS["TACA"]


@pytest.fixture(scope="session")
def taca(taca_node):
    """Run the registered TACA node: taca(model, gamma, threshold) -> its MODEL output."""

    def run(model, gamma, threshold):
        return taca_node.execute(model=model, gamma=gamma, threshold=threshold).result[0]

    return run


@pytest.fixture(scope="session")
def server():
    """The test ComfyUI server (comfy_server.SharedComfyUI: this pack and the tiny model files),
    started on first use and shared by every test that asks for it."""
    from comfy_server import shared_server

    with shared_server() as s:
        yield s


@pytest.fixture
def torch_compile():
    """Run ComfyUI's TorchCompileModel node (inductor): torch_compile(model) -> its MODEL output.

    Dynamo's caches and counters are reset before and after the test.
    """
    import torch._dynamo
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield lambda model: TorchCompileModel.execute(model=model, backend="inductor").result[0]
    torch._dynamo.reset()


@pytest.fixture
def loras(tmp_path, monkeypatch):
    """A `loras` folder for this test: write(name, state_dict, metadata) saves a file into it."""
    import folder_paths
    import safetensors.torch

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(tmp_path)], {".safetensors"}))

    def write(name, sd, metadata=None):
        safetensors.torch.save_file(sd, str(tmp_path / name), metadata=metadata)
        return name

    write.path = tmp_path
    return write
