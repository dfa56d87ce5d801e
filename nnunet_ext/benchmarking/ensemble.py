"""``--ensemble``: nnU-Net's own choice of the best model or ensemble (``nnUNetv2_find_best_configuration``)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from nnunet_ext.benchmarking.results import BenchmarkError, read_json
from nnunet_ext.benchmarking.summary import ModelSummary


def run_streaming(command: list[str]) -> tuple[int, str]:
    """Run ``command``, printing its output (stdout and stderr) as it comes; returns (exit code, the output)."""
    import io

    lines = []
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a Python child prints each line, not 8 KiB blocks
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment) as process:
        # newline="": a progress bar's carriage returns reach the terminal as they are
        for line in io.TextIOWrapper(process.stdout, encoding="utf-8", errors="replace", newline=""):
            print(line, end="", flush=True)
            lines.append(line)
    return process.returncode, "".join(lines)


def run_find_best_configuration(dataset_name: str, summaries: list[ModelSummary], processes: int) -> str:
    """nnU-Net's own model/ensemble selection over the folds every model has; returns a markdown report."""
    from nnunet_ext.crossval import console_script

    folds = sorted(set.intersection(*(set(s.model.folds) for s in summaries)) - {"all"}, key=int)
    if not folds:
        raise BenchmarkError("--ensemble needs folds that every model has; these models share none.")
    for s in summaries:
        for fold in folds:
            if not any((s.model.folder / f"fold_{fold}" / "validation").glob("*.npz")):
                raise BenchmarkError(f"{s.model.folder.name} fold {fold} has no .npz probabilities, which ensembling "
                                     f"needs: rerun its validation with nnunet-ext cv (it adds --npz).")
    trainers = list(dict.fromkeys(s.model.trainer for s in summaries))
    configurations = list(dict.fromkeys(s.model.configuration for s in summaries))
    command = [console_script("nnUNetv2_find_best_configuration"), dataset_name[7:10], "-c", *configurations,
               "-tr", *trainers, "-p", summaries[0].model.plans, "-f", *folds, "-np", str(processes)]
    returncode, output = run_streaming(command)
    if returncode != 0:
        raise RuntimeError(f"nnUNetv2_find_best_configuration failed (exit {returncode}):\n{output[-3000:]}")
    results = Path(os.environ["nnUNet_results"]) / dataset_name
    information = read_json(results / "inference_information.json")
    best = information["best_model_or_ensemble"]
    chosen = " + ".join(f"{m['trainer']} {m['configuration']}" for m in best["selected_model_or_models"])
    kind = "ensemble" if len(best["selected_model_or_models"]) > 1 else "single model"
    lines = [f"Folds {', '.join(folds)}. Foreground Dice of every candidate (nnU-Net's cross-validation "
             f"accumulation; ensembles average the .npz probabilities):", "",
             "| model or ensemble | Dice |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" for name, value in information["all_results"].items()]
    lines += ["", f"Best: **{chosen}** ({kind}), Dice {best['result_on_crossval_pre_pp']:.4f}, "
                  f"{best['result_on_crossval_post_pp']:.4f} after nnU-Net's postprocessing.", "",
              "Inference commands, as nnU-Net writes them:", "", "```",
              (results / "inference_instructions.txt").read_text().strip(), "```"]
    return "\n".join(lines)
