"""Run the test suite against one ComfyUI host: python tests/run_host.py COMFYUI_FOLDER [pytest options] [test paths]

Use the Python environment that has that ComfyUI's requirements (its venv): the script runs
pytest with that same Python and COMFYUI_PATH set to the folder, after naming the ComfyUI
and frontend versions it tests: the whole suite, or only the test files given. Standard library only.
"""

import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def comfyui_version(folder: Path) -> str:
    text = (folder / "comfyui_version.py").read_text() if (folder / "comfyui_version.py").is_file() else ""
    found = re.search(r'__version__\s*=\s*"([^"]+)"', text)
    return found[1] if found else "unknown"


def main(argv) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    folder = Path(argv[0]).resolve()
    if not (folder / "main.py").is_file() or not (folder / "comfy").is_dir():
        print(f"{folder} is not a ComfyUI folder (it has no main.py and comfy/).", file=sys.stderr)
        return 2
    try:
        frontend = importlib.metadata.version("comfyui-frontend-package")
    except importlib.metadata.PackageNotFoundError:
        frontend = "not installed in this Python"
    print(f"ComfyUI {comfyui_version(folder)} at {folder}, frontend {frontend}, Python {sys.executable}", flush=True)
    options = argv[1:]
    # Test files or folders given: run those; otherwise the whole suite.
    named = any(not arg.startswith("-") and Path(arg.split("::")[0]).exists() for arg in options)
    command = [sys.executable, "-m", "pytest", *([] if named else [str(TESTS)]), *options]
    return subprocess.call(command, env={**os.environ, "COMFYUI_PATH": str(folder)}, cwd=TESTS.parent)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
