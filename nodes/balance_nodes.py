"""TACA Attention Balance Probe and Plot: see the image→text attention TACA rebalances."""

import json
import os

import torch

import folder_paths
from comfy_api.latest import io

from .balance_plot import PLOT, balance_figure, balance_table
from .probe import KEPT_RUNS, NODE as PROBE, apply_probe

Balance = io.Custom("TACA_BALANCE")


class TACABalanceProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACABalanceProbe",
            display_name=PROBE,
            category="model_patches/attention",
            description=(
                "Records, for every joint attention call of every step of the sampling runs of this model, the share "
                "of attention the image gives the prompt's text tokens (exact, averaged over heads and image "
                "tokens), for both guidance branches, with TACA's temperature and without it. Feed the balance "
                "output and the sampled latent to TACA Attention Balance Plot. Placed before TACA, one probe records "
                "a baseline run (its MODEL sampled as it is) and a TACA run (its MODEL through TACA and the LoRA) for "
                "the plot to compare. Only this model pays for the probe: about two extra attention calls per joint "
                "call while TACA is on, one while it is off."
            ),
            inputs=[
                io.Model.Input("model", tooltip=(
                    "The model to probe, with or without a TACA node before or after the probe. Before TACA and its "
                    "LoRA, the same probe also records a baseline run of this model."
                )),
            ],
            outputs=[
                io.Model.Output(tooltip="The same model, probed. Sample with it; the input model is unchanged."),
                Balance.Output("balance", tooltip="The probe's records, for TACA Attention Balance Plot."),
            ],
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        return io.NodeOutput(*apply_probe(model))


class TACABalancePlot(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACABalancePlot",
            display_name=PLOT,
            category="model_patches/attention",
            description=(
                "Plots the run that produced the latent: how much of the image tokens' attention goes to the prompt, "
                "per joint block and step, for each guidance branch that ran. The heatmap shows what TACA changed, on "
                "a colour scale that keeps small changes pale: against a baseline run where one is connected, "
                "otherwise each attention call with TACA's γ against the same call without it. The figure says "
                "which. Also writes the numbers, with TACA's settings, as JSON into ComfyUI's output folder."
            ),
            inputs=[
                Balance.Input("balance", tooltip="The balance output of the TACA Attention Balance Probe that recorded the run to plot."),
                io.Latent.Input(
                    "samples",
                    tooltip="The latent sampled with the probed model: the plot shows the run that made it, and runs after the sampler.",
                ),
                io.String.Input("filename_prefix", default="taca_balance/balance",
                                tooltip="Where the JSON goes, under ComfyUI's output folder."),
                io.Latent.Input(
                    "baseline_samples", optional=True,
                    tooltip=(
                        "Optional: the latent of a baseline run to compare with, sampled with the same seed, steps and "
                        "sampler from the model without TACA and without the TACA LoRA, through a probe. The heatmap "
                        "then shows this run minus the baseline. Without it, the plot compares each call with and "
                        "without TACA's γ, which keeps the LoRA's effect."
                    ),
                ),
                Balance.Input(
                    "baseline", optional=True,
                    tooltip=(
                        "Optional: the probe that recorded the baseline run, where that is another probe than "
                        "'balance'. One probe placed before TACA records both runs; leave this empty then."
                    ),
                ),
            ],
            outputs=[io.Image.Output(tooltip="The plot, for Preview Image or Save Image.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, balance, samples, filename_prefix, baseline_samples=None, baseline=None) -> io.NodeOutput:
        run = recorded_run(balance, samples, "samples")
        base = None
        if baseline_samples is not None:
            base = recorded_run(baseline if baseline is not None else balance, baseline_samples, "baseline_samples", other_than=run)
        elif baseline is not None:
            raise ValueError(
                f"{PLOT}: 'baseline' is connected but 'baseline_samples' is not. Connect the latent of the baseline "
                f"run's sampler to 'baseline_samples', so the plot knows which of that probe's runs to compare with."
            )
        table = balance_table(run, base)
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        with open(os.path.join(folder, f"{name}_{counter:05}_.json"), "w", encoding="utf-8") as out:
            json.dump(table, out, indent=1, ensure_ascii=False)
        image = torch.from_numpy(balance_figure(table)).float().div(255).unsqueeze(0)
        return io.NodeOutput(image)


def recorded_run(balance, samples: dict, input_name: str, other_than=None):
    """The probe's run that produced the latent on `input_name`, with joint calls recorded."""
    run = balance.run_for(samples["samples"], other_than)
    if run is None:
        raise ValueError(
            f"{PLOT}: the probe recorded no sampling run that produced the latent on '{input_name}'. Connect the "
            f"latent of a sampler that samples with the probe's MODEL output, or with a model made from it (runs the "
            f"probe saw: {len(balance.runs)}; it keeps the last {KEPT_RUNS})."
        )
    if run.taken_over:
        raise ValueError(
            f"{PLOT}: the run on '{input_name}' went through a second {PROBE} placed after this one, and that probe "
            f"recorded it, not this one. Connect the second probe's balance output here, or remove one of the probes."
        )
    if not run.calls:  # not one step recorded a joint call (a step cache always runs the first)
        steps = f" in any of its {len(run.schedule)} steps" if run.schedule else ""
        raise ValueError(
            f"{PLOT}: the run on '{input_name}' recorded no joint attention call of {run.family}{steps}: none reached "
            f"the probe. Was another node replacing the model's attention or its blocks? Place the probe after it."
        )
    return run
