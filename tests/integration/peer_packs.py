"""Other node packs that the tests load beside TACA, as ComfyUI loads custom nodes.

Each pack is named by its repository and the commit the tests were written against. They
are not part of this repository: the folder that the TACA_PEER_PACKS environment variable
names holds them, one folder per pack under its repository's name, as a ComfyUI
custom_nodes folder would:

    git clone https://github.com/city96/ComfyUI-GGUF $TACA_PEER_PACKS/ComfyUI-GGUF
    git -C $TACA_PEER_PACKS/ComfyUI-GGUF checkout <commit>

(tests/run_peers.py --fetch does this for every pack). conftest.py loads each pack found
there with ComfyUI's own loader (nodes.load_custom_node), into the test process and into
the test server's custom_nodes; a test of a pack that is absent, or that does not load on
the host, is skipped with the reason. Standard library only: run_peers.py reads it too.
"""

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

ENV = "TACA_PEER_PACKS"


@dataclass(frozen=True)
class PeerPack:
    folder: str  # its folder under TACA_PEER_PACKS: the repository's name
    url: str
    commit: str
    requirements: tuple = ()  # PyPI packages its code imports that ComfyUI does not ship

    def fetch_command(self, parent: str = f"${ENV}") -> str:
        dest = f"{parent}/{self.folder}"
        return f"git clone {self.url} {dest} && git -C {dest} checkout {self.commit}"


GGUF = PeerPack("ComfyUI-GGUF", "https://github.com/city96/ComfyUI-GGUF",
                "795e45156ece99afbc3efef911e63fcb46e6a20d", ("gguf",))
KJNODES = PeerPack("ComfyUI-KJNodes", "https://github.com/kijai/ComfyUI-KJNodes",
                   "3f20054214fec9f9234fd3841ae6f1e4287948f6", ("color-matcher", "mss", "opencv-python-headless"))
NAG = PeerPack("ComfyUI-NAG", "https://github.com/ChenDarYen/ComfyUI-NAG", "ef8a641be08983cf5f06669f70719b6eecce3c7f")
PEER_PACKS = (GGUF, KJNODES, NAG)

# folder → None where ComfyUI loaded the pack into this process, else why it did not (conftest.py fills it)
LOADED: Dict[str, Optional[str]] = {}


def peer_folder() -> Optional[Path]:
    value = os.environ.get(ENV)
    return Path(value).resolve() if value else None


def pack_path(pack: PeerPack) -> Optional[Path]:
    folder = peer_folder()
    if folder is None or not (folder / pack.folder / "__init__.py").is_file():
        return None
    return folder / pack.folder


def checked_out(path: Path) -> str:
    """The commit a git checkout is at, or what is known of a folder without .git."""
    if not (path / ".git").exists():
        return "no .git (an exported tree)"
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (git failed)"


def missing_reason(pack: PeerPack) -> Optional[str]:
    """Why a test of `pack` cannot run here, or None when ComfyUI loaded it."""
    folder = peer_folder()
    if folder is None:
        return (f"{pack.folder} not loaded: set {ENV} to a folder holding it at commit {pack.commit} "
                f"({pack.fetch_command()}), or run tests/run_peers.py --fetch.")
    if pack_path(pack) is None:
        return (f"{pack.folder} is missing from {ENV}={folder}: the tests name commit {pack.commit} "
                f"({pack.fetch_command(str(folder))}).")
    if pack.folder not in LOADED:
        return f"{pack.folder} was not loaded into this process (conftest.py loads the packs under {ENV})."
    return LOADED[pack.folder]


def require(pack: PeerPack, module: bool = False) -> None:
    """Skip the calling test (or with `module`, the calling test module) unless ComfyUI loaded
    `pack` in this process, saying why."""
    reason = missing_reason(pack)
    if reason is not None:
        import pytest

        pytest.skip(reason, allow_module_level=module)
