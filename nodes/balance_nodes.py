"""TACA Attention Balance Probe and Plot: see the image→text attention TACA rebalances."""

import json
import os

import torch

import folder_paths
from comfy_api.latest import io

from .balance_plot import balance_figure, balance_table
from .probe import apply_probe

Balance = io.Custom("TACA_BALANCE")


class TACABalanceProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TACABalanceProbe",
            display_name="TACA Attention Balance Probe",
            category="model_patches/attention",
            description=(
                "Records, for every joint attention call of every step of the sampling runs of this model, the share "
                "of attention the image gives the prompt's text tokens (exact, averaged over heads and image "
                "tokens), with TACA's temperature and without it. Feed the balance output and the sampled latent "
                "to TACA Attention Balance Plot. Only this model pays for the probe: about two extra attention "
                "calls per joint call while TACA is on, one while it is off."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The model to probe, with or without a TACA node before or after the probe."),
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
            display_name="TACA Attention Balance Plot",
            category="model_patches/attention",
            description=(
                "Plots the run that produced the latent: the image→text attention mass per joint block and step, "
                "and each step's mean with and without TACA, TACA's window shaded. Also writes the numbers as "
                "JSON into ComfyUI's output folder."
            ),
            inputs=[
                Balance.Input("balance", tooltip="The balance output of TACA Attention Balance Probe."),
                io.Latent.Input(
                    "samples",
                    tooltip="The latent sampled with the probed model: the plot shows the run that made it, and runs after the sampler.",
                ),
                io.String.Input("filename_prefix", default="taca_balance/balance",
                                tooltip="Where the JSON goes, under ComfyUI's output folder."),
            ],
            outputs=[io.Image.Output(tooltip="The plot, for Preview Image or Save Image.")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, balance, samples, filename_prefix) -> io.NodeOutput:
        run = balance.run_for(samples["samples"])
        if run is None:
            raise ValueError(
                "TACA Attention Balance Plot: the probe recorded no sampling run that produced this latent. Connect "
                "the latent of a sampler that samples with the probe's MODEL output (runs the probe saw: "
                f"{len(balance.runs)})."
            )
        table = balance_table(run)
        if all(table["skipped"]):  # no step with a joint call recorded
            raise ValueError(
                f"TACA Attention Balance Plot: the run recorded no joint attention call of {run.family} for the prompt "
                f"(cond). Was another node replacing the model's attention?"
            )
        folder, name, counter, _, _ = folder_paths.get_save_image_path(filename_prefix, folder_paths.get_output_directory())
        with open(os.path.join(folder, f"{name}_{counter:05}_.json"), "w", encoding="utf-8") as out:
            json.dump(table, out, indent=1, ensure_ascii=False)
        image = torch.from_numpy(balance_figure(table)).float().div(255).unsqueeze(0)
        return io.NodeOutput(image)
