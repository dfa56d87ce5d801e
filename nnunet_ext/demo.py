"""``nnunet-ext demo``: the whole nnU-Net pipeline on synthetic data, with every 3D trainer (and nnU-Net's default).

Every step is a stock nnU-Net command run in a subprocess, exactly as a user would type it; the demo only makes
the data, chooses the short trainer variants, times the runs and tabulates nnU-Net's own evaluation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import subprocess
import warnings
from pathlib import Path

from nnunet_ext.architectures.profiling import count_parameters
from nnunet_ext.benchmarking.evaluation import label_names
from nnunet_ext.catalog import UnknownTrainerError, resolve_trainer, supported_configurations
from nnunet_ext.checks import NNUNET_PATH_VARIABLES
from nnunet_ext.crossval import console_script
from nnunet_ext.synthetic import find_dataset_folder, make_synthetic_dataset

CONFIGURATION = "3d_fullres"
FOLD = "0"
# nnU-Net's training log lines worth echoing as progress
SYNTHETIC_MARKER = "nnunet_ext.synthetic"  # in the description that make_synthetic_dataset writes
PROGRESS_MARKERS = ("Epoch ", "train_loss", "Pseudo dice", "Epoch time", "Predicting", "done with")


@dataclasses.dataclass
class DemoResult:
    trainer: str
    dice: dict[str, float]
    train_seconds: float
    parameters: int


def _environment(workdir: Path) -> dict[str, str]:
    """The user's nnU-Net folders where set, the workdir's otherwise (all three from one place, never mixed)."""
    env = dict(os.environ)
    if not all(env.get(v) for v in NNUNET_PATH_VARIABLES):
        for variable in NNUNET_PATH_VARIABLES:
            env[variable] = str(workdir / variable)
    env.setdefault("nnUNet_compile", "f")
    env.setdefault("nnUNet_def_n_proc", "2")
    return env


def _run(command: list[str], env: dict[str, str], log_file: Path) -> None:
    """Run a stock nnU-Net command, log all of its output and echo its progress lines."""
    print("  $ " + " ".join(command), flush=True)
    command = [console_script(command[0]), *command[1:]]
    with log_file.open("a") as log:
        log.write("$ " + " ".join(command) + "\n")
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if any(marker in line for marker in PROGRESS_MARKERS):
                print("    " + line.rstrip(), flush=True)
        if process.wait() != 0:
            raise RuntimeError(f"'{' '.join(command)}' failed with exit code {process.returncode}; "
                               f"its output is in {log_file}")


def _demo_trainers(names: list[str] | None, baseline: bool, quick: bool) -> list[tuple[str, str]]:
    """(full-length name, short variant actually trained) per trainer; the default is every 3D one of ours.

    A named trainer resolves as ``nnUNetv2_train`` resolves it (``catalog.resolve_trainer``: a user's own trainer
    in an ``nnUNet_extTrainer`` folder too), and must have the short variant ``<name>_Demo`` (``_Smoke`` with
    ``--quick``), so that every trainer of the table gets the same step budget."""
    from nnunet_ext.trainers import TRAINERS

    suffix = "_Smoke" if quick else "_Demo"
    ours = [t.__name__ for t in TRAINERS if CONFIGURATION in supported_configurations(t)]
    for name in names or []:
        if CONFIGURATION not in supported_configurations(resolve_trainer(name)):
            raise ValueError(f"The demo trains {CONFIGURATION}, which {name} cannot train (it is 2D-only). "
                             f"The 3D trainers of nnunet-ext: {', '.join(ours)}.")
        try:
            resolve_trainer(name + suffix)
        except UnknownTrainerError:
            raise UnknownTrainerError(f"{name} has no short variant {name + suffix}, which the demo trains so that "
                                      f"every trainer gets the same step budget: define it beside {name} (as "
                                      f"nnunet_ext.trainers.base.DemoRunMixin does), or pick one of "
                                      f"{', '.join(ours)}.") from None
    return [(name, name + suffix) for name in [*(names or ours), *(["nnUNetTrainer"] if baseline else [])]]


def _training_seconds(fold_folder: Path) -> float:
    """Duration of nnU-Net's training loop (start of its log to 'Training done.'), so that a reused model reports
    the time it took, too."""
    def timestamp(line: str) -> datetime.datetime:
        return datetime.datetime.strptime(line[:26], "%Y-%m-%d %H:%M:%S.%f")

    for log in sorted(fold_folder.glob("training_log_*.txt"), reverse=True):
        lines = [line.rstrip() for line in log.read_text().splitlines() if line[:2] == "20" and line[26:28] == ": "]
        done = [line for line in lines if line.endswith("Training done.")]
        if done:
            return (timestamp(done[-1]) - timestamp(lines[0])).total_seconds()
    raise FileNotFoundError(f"No finished training log in {fold_folder}")


def _parameters(results_folder: Path) -> int:
    """Parameters of the trained network, rebuilt the way nnU-Net's predictor rebuilds it."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    # nnU-Net narrates its device choice and trainer lookup; the demo's own progress lines are enough
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictor = nnUNetPredictor(device=torch.device("cpu"), verbose=False)
        predictor.initialize_from_trained_model_folder(str(results_folder), (int(FOLD),))
    return count_parameters(predictor.network)


def run_demo(workdir: str | os.PathLike = "nnunet_ext_demo", quick: bool = False,
             trainer_names: list[str] | None = None, baseline: bool = False, dataset_id: int = 501,
             overwrite: bool = False) -> list[DemoResult]:
    """Synthesise, plan, train, predict and evaluate; print the table and write it to ``workdir/demo_results.md``
    and, machine-readable, ``workdir/demo_results.json``."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2

    trainers = _demo_trainers(trainer_names, baseline, quick)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    env = _environment(workdir)
    log_file = workdir / "demo_log.txt"
    total_steps = 2 + 2 * len(trainers)
    step = 0

    def announce(message: str) -> None:
        nonlocal step
        step += 1
        print(f"[{step}/{total_steps}] {message}", flush=True)

    raw = Path(env["nnUNet_raw"])
    dataset_folder = find_dataset_folder(dataset_id, raw)
    if dataset_folder is None:
        announce(f"synthetic 3D dataset {dataset_id} -> {raw}")
        dataset_folder = make_synthetic_dataset(dataset_id, dim=3, num_cases=6 if quick else 10, raw_dir=raw)
    elif SYNTHETIC_MARKER in json.loads((dataset_folder / "dataset.json").read_text()).get("description", ""):
        announce(f"reusing the synthetic dataset {dataset_folder}")
    else:
        raise FileExistsError(f"Dataset {dataset_id} already exists ({dataset_folder}) and is not a synthetic one of "
                              f"nnunet-ext; the demo leaves it alone. Pick a free id with --dataset-id.")
    dataset_name = dataset_folder.name

    preprocessed_plans = Path(env["nnUNet_preprocessed"]) / dataset_name / "nnUNetPlans.json"
    if preprocessed_plans.is_file() and not overwrite:
        announce(f"reusing nnU-Net's plans and preprocessed data in {preprocessed_plans.parent}")
    else:
        announce("nnU-Net planning and preprocessing")
        _run(["nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", CONFIGURATION, "-np", "2"], env, log_file)

    results: list[DemoResult] = []
    train_env = {**env, "nnUNet_n_proc_DA": "0"}  # only for training: planning crashes with 0
    for full_name, variant in trainers:
        results_folder = Path(env["nnUNet_results"]) / dataset_name / f"{variant}__nnUNetPlans__{CONFIGURATION}"
        trained = (results_folder / f"fold_{FOLD}" / "checkpoint_final.pth").is_file()
        announce(f"training {variant} ({full_name} with the demo's step budget), {CONFIGURATION} fold {FOLD}")
        if trained and not overwrite:
            print(f"  reusing the trained model in {results_folder} (--overwrite retrains)")
        else:
            _run(["nnUNetv2_train", str(dataset_id), CONFIGURATION, FOLD, "-tr", variant, "-device", "cpu"],
                 train_env, log_file)

        announce(f"predicting the held-out cases with {variant} and evaluating")
        predictions = workdir / "predictions" / variant
        _run(["nnUNetv2_predict", "-i", str(dataset_folder / "imagesTs"), "-o", str(predictions),
              "-d", str(dataset_id), "-c", CONFIGURATION, "-tr", variant, "-f", FOLD, "-device", "cpu",
              "-npp", "1", "-nps", "1", "--disable_progress_bar"], env, log_file)
        compute_metrics_on_folder2(str(dataset_folder / "labelsTs"), str(predictions),
                                   str(results_folder / "dataset.json"), str(results_folder / "plans.json"),
                                   str(predictions / "summary.json"), num_processes=1)
        summary = json.loads((predictions / "summary.json").read_text())
        names = label_names(json.loads((results_folder / "dataset.json").read_text()))
        dice = {names.get(key, key): metrics["Dice"] for key, metrics in summary["mean"].items()}
        results.append(DemoResult(full_name, dice, _training_seconds(results_folder / f"fold_{FOLD}"),
                                  _parameters(results_folder)))

    table = format_table(results, quick)
    print("\n" + table)
    (workdir / "demo_results.md").write_text(table + "\n")
    (workdir / "demo_results.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1) + "\n")
    print(f"\nWritten to {workdir / 'demo_results.md'} (and .json); full command output in {log_file}")
    return results


def format_table(results: list[DemoResult], quick: bool) -> str:
    labels = list(dict.fromkeys(label for r in results for label in r.dice))
    header = ["trainer", *[f"Dice {label}" for label in labels], "training loop (s)", "parameters"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r.trainer, *[f"{r.dice.get(label, float('nan')):.3f}" for label in labels],
                 f"{r.train_seconds:.0f}", f"{r.parameters:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    budget = "smoke run (2 iterations): Dice is meaningless" if quick else "the demo's short step budget"
    return (f"nnunet-ext demo, {CONFIGURATION} fold {FOLD}, held-out synthetic cases, {budget}, CPU\n\n"
            + "\n".join(lines))

