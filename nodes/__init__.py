"""ComfyUI glue of ComfyUI-TACA: model patching, architectures, LoRA and node definitions.

Import this package relatively only: inside ComfyUI the top-level name `nodes` is
ComfyUI's own nodes.py.
"""
