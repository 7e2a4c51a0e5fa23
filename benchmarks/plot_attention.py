"""Plot attention time against sequence length from benchmarks/attention.py's JSON.

    python benchmarks/plot_attention.py [benchmarks/results/attention-cpu.json]

Needs matplotlib (the timing script itself needs only torch). Writes a PNG beside the
JSON: left, median time per call for the FLUX.1 shapes (log-log), right, time as a
ratio to plain attention. SD3.5-Medium (head dim 64) is drawn as separate markers.
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "plain": ("plain (host SDPA)", "black", "o", "-"),
    "taca": ("TACA core", "tab:blue", "s", "-"),
    "taca_one_copy": ("TACA, one output copy (prototype)", "tab:cyan", "D", ":"),
    "flex_eager": ("official FLUX: flex_attention eager", "tab:red", "^", "-"),
    "flex_compiled": ("official FLUX: flex_attention compiled", "tab:orange", "v", "--"),
    "materialized": ("official SD3: materialized logits", "tab:green", "P", "-"),
}


def main():
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "results" / "attention-cpu.json"
    report = json.loads(path.read_text())
    env = report["environment"]
    fig, (ax_time, ax_ratio) = plt.subplots(1, 2, figsize=(13, 5))
    for case, (label, color, marker, line) in STYLE.items():
        for family, filled in (("FLUX.1", True), ("SD3.5-Medium", False)):
            points = [
                (res["seq_len"], res["cases"][case])
                for res in report["shapes"]
                if res["shape"]["model"] == family and "median_s" in res["cases"].get(case, {})
            ]
            if not points:
                continue
            lengths = [n for n, _ in points]
            kwargs = dict(color=color, marker=marker, markersize=7)
            if filled:
                kwargs.update(linestyle=line, label=label)
            else:
                kwargs.update(linestyle="none", markerfacecolor="none")
            ax_time.plot(lengths, [info["median_s"] * 1e3 for _, info in points], **kwargs)
            ax_ratio.plot(lengths, [info["time_ratio"] for _, info in points], **kwargs)
    skipped = [
        f"{res['shape']['model']} {res['shape']['resolution']}², L={res['seq_len']}: {case} "
        f"{'skipped, ' + info['skipped'].split(' (')[0] if 'skipped' in info else 'unsupported'}"
        for res in report["shapes"]
        for case, info in res["cases"].items()
        if case in STYLE and ("skipped" in info or "unsupported" in info)
    ]
    if skipped:
        ax_ratio.text(0.98, 0.6, "\n".join(skipped), transform=ax_ratio.transAxes, fontsize=7, ha="right", va="top")
    ax_time.set(xscale="log", yscale="log", xlabel="sequence length L (text + image tokens)", ylabel="time per call (ms)")
    ax_ratio.set(xscale="log", yscale="log", xlabel="sequence length L (text + image tokens)", ylabel="time / plain attention")
    ax_ratio.axhline(1.05, color="grey", linewidth=0.8, linestyle="--")
    ax_ratio.annotate("1.05", (0, 1.05), xycoords=("axes fraction", "data"), fontsize=7, color="grey")
    for ax in (ax_time, ax_ratio):
        ax.grid(True, which="both", alpha=0.3)
    ax_time.legend(fontsize=8, title="filled: FLUX.1, hollow: SD3.5-M", title_fontsize=8)
    fig.suptitle(
        f"One joint attention call, {env['device']} {env['dtype']}, {env.get('gpu') or env.get('cpu', '')}, "
        f"{env['threads']} threads, torch {env['torch']}",
        fontsize=10,
    )
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
