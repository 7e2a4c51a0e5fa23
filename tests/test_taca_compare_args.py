"""tools/taca_compare.py's command line, without a ComfyUI: the options as its help writes them."""

import re
import shlex
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import taca_compare  # noqa: E402

REQUIRED = ["--comfyui", "/opt/ComfyUI", "--prompt", "a red cube left of a blue ball", "--seed", "7"]


def help_text(capsys) -> str:
    with pytest.raises(SystemExit):
        taca_compare.parse_args(["--help"])
    return capsys.readouterr().out


def test_the_help_example_of_comfyui_args_parses(capsys):
    # The help's own example, as a shell splits it: a value that starts with '-'.
    (example,) = re.findall(r'--comfyui-args "[^"]+"', " ".join(help_text(capsys).split()))
    assert taca_compare.parse_args([*REQUIRED, *shlex.split(example)]).comfyui_args == "--cpu"


@pytest.mark.parametrize("form", [["--comfyui-args", "--cpu"], ["--comfyui-args=--cpu"]])
def test_comfyui_args_with_a_space_or_an_equals_sign(form):
    args = taca_compare.parse_args([*REQUIRED, *form, "--steps", "4"])
    assert args.comfyui_args == "--cpu" and args.steps == 4  # the options after it are the tool's again


@pytest.mark.parametrize("form", [["--comfyui-args", "--lowvram --preview-method auto"], ["--comfyui-args=--lowvram --preview-method auto"]])
def test_comfyui_args_with_several_arguments_in_one_string(form):
    args = taca_compare.parse_args([*form, *REQUIRED])
    assert shlex.split(args.comfyui_args) == ["--lowvram", "--preview-method", "auto"]
    assert args.comfyui == "/opt/ComfyUI"


def test_comfyui_args_without_a_value_is_an_error(capsys):
    with pytest.raises(SystemExit):
        taca_compare.parse_args([*REQUIRED, "--comfyui-args"])
    assert "--comfyui-args: expected one argument" in capsys.readouterr().err


def test_a_prompt_that_starts_with_a_dash_is_not_taken_for_comfyui_args():
    args = taca_compare.parse_args(["--comfyui", "/opt/ComfyUI", "--seed", "7", "--prompt=--cpu"])
    assert args.prompt == "--cpu" and args.comfyui_args == ""
