"""Checks of a node's own inputs, for values that reach it past ComfyUI's validation.

ComfyUI 0.3.64 does not check a V3 node's combo values, and no version rejects NaN (every
comparison with NaN is false). A prompt sent through the API can carry either, so the
nodes check their inputs themselves and say what is allowed.
"""

import math


def number_in_range(node: str, name: str, value, low: float, high: float) -> float:
    """`value` as a float, or a ValueError naming the input and its range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{node}: '{name}' is {value!r}; it takes a finite number from {low} to {high}.")
    return float(value)


def one_of(node: str, name: str, value, options) -> str:
    """`value`, or a ValueError naming the input and its choices."""
    if value not in options:
        choices = ", ".join(repr(o) for o in options)
        raise ValueError(f"{node}: '{name}' is {value!r}; it takes one of {choices}.")
    return value
