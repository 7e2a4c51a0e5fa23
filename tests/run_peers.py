"""Run the tests of TACA with other node packs against one ComfyUI host:

    TACA_PEER_PACKS=/path/to/packs python tests/run_peers.py COMFYUI_FOLDER [--fetch] [pytest options]

TACA_PEER_PACKS is a folder holding the packs (tests/integration/peer_packs.py names each
pack's repository and the commit its tests were written against). --fetch first clones, with
git, each pack the folder lacks, at that commit. The packs' own Python requirements must be in
the Python that runs this (ComfyUI's); the script names any that are missing. Then it runs the
peer tests (test_peer_*.py) through run_host.py: same Python, COMFYUI_PATH set to the folder.
Standard library only.
"""

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS / "integration"))
sys.path.insert(0, str(TESTS))

import peer_packs  # noqa: E402
import run_host  # noqa: E402


def fetch(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for pack in peer_packs.PEER_PACKS:
        dest = folder / pack.folder
        if dest.exists():
            continue
        print(f"fetching {pack.folder} at {pack.commit}", flush=True)
        subprocess.run(["git", "clone", "--quiet", pack.url, str(dest)], check=True)
        subprocess.run(["git", "-C", str(dest), "checkout", "--quiet", pack.commit], check=True)


def missing_requirements() -> list:
    missing = []
    for pack in peer_packs.PEER_PACKS:
        if peer_packs.pack_path(pack) is None:
            continue
        for requirement in pack.requirements:
            try:
                importlib.metadata.version(requirement)
            except importlib.metadata.PackageNotFoundError:
                missing.append(requirement)
    return missing


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    folder = peer_packs.peer_folder()
    if folder is None:
        print(f"Set {peer_packs.ENV} to a folder for the packs (it may be empty with --fetch).", file=sys.stderr)
        return 2
    comfyui, options = argv[0], [a for a in argv[1:] if a != "--fetch"]
    if "--fetch" in argv[1:]:
        fetch(folder)
    for pack in peer_packs.PEER_PACKS:
        path = peer_packs.pack_path(pack)
        print(f"{pack.folder}: " + (f"{path}, at {peer_packs.checked_out(path)} (tests name {pack.commit})" if path
                                    else f"absent: {pack.fetch_command(str(folder))}"), flush=True)
    missing = missing_requirements()
    if missing:
        print(f"Missing in {sys.executable}: pip install {' '.join(missing)}", file=sys.stderr)
        return 2
    return run_host.main([comfyui, "-k", "test_peer_", *options])


if __name__ == "__main__":
    os.chdir(TESTS.parent)
    sys.exit(main(sys.argv[1:]))
