"""``nnunet-ext plan``: nnU-Net's experiment planning, sized with each trainer's own training-step memory.

nnU-Net's ``ExperimentPlanner`` fits the patch and batch size to ``-gpu_memory_target`` with a feature-map heuristic
of its PlainConvUNet. ``ArchitectureAwarePlanner`` keeps every rule of that planner and replaces only the estimate:

* the initial patch is nnU-Net's (the 256³ / 2048² volume at the spacing's aspect ratio, clipped to the median image
  shape); while the predicted memory at batch size 2 exceeds the target, nnU-Net's own loop shrinks the axis that is
  largest relative to the median shape, by its divisibility step;
* the memory of a candidate is that of one training step of the trainer's network (built by its own
  ``build_network_architecture`` at the patch the trainer will train with, ``adjust_patch_size``), its optimizer,
  nnU-Net's loss and deep-supervision setting, at the given precision (``nnUNetTrainerExt.training_memory``: a trace
  without data, see ``nnunet_ext.architectures.memory``);
* the batch size is the largest the model predicts to fit, at least 2 and at most nnU-Net's 5 % of the dataset's
  voxels;
* spacing, normalisation, resampling and transposition are nnU-Net's, and the data identifiers are those of
  ``nnUNetPlans`` (as nnU-Net's ResEnc planners do), so the preprocessed data of ``nnUNetPlans`` is reused.

Activation checkpointing (``auto``) is used only where it buys a larger patch than planning without it. Each planned
configuration records ``predicted_memory_gb``, ``gpu_memory_target_gb``, ``precision`` and
``activation_checkpointing`` under the key ``"nnunet_ext"``; the trainers build their network with that
checkpointing setting and log the prediction when training starts. Only ``2d`` and ``3d_fullres`` are planned:
their preprocessed data is shared with ``nnUNetPlans``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

from nnunet_ext import checks, datasets

PLANS_KEY = "nnunet_ext"  # the same key as nnunet_ext.trainers.base.PLANS_KEY (checked in the tests)
PLANNED_CONFIGURATIONS = ("2d", "3d_fullres")
SHARED_SETTINGS = ("spacing", "normalization_schemes", "use_mask_for_norm", "resampling_fn_data",
                   "resampling_fn_data_kwargs", "resampling_fn_seg", "resampling_fn_seg_kwargs", "preprocessor_name")
Checkpointing = Literal["auto", "on", "off"]


class PlanningError(ValueError):
    """A plan ``nnunet-ext plan`` cannot make; the message names the problem and the fix."""


class _BelowMinimum(Exception):
    """nnU-Net's shrinking went below the smallest patch the trainer accepts."""


def default_plans_name(trainer: type, gpu_memory_target_gb: float) -> str:
    """``nnUNetPlans_<network>_<G>G``, e.g. ``nnUNetPlans_S2CANet_8G``."""
    network = getattr(trainer, "network_class", None)
    return f"nnUNetPlans_{network.__name__ if network is not None else trainer.__name__}_{gpu_memory_target_gb:g}G"


def require_memory_model(trainer: type) -> None:
    """PlanningError unless ``trainer`` can predict its training memory (nnunet-ext trainers and plug-ins built on
    ``nnUNetTrainerExt``, or any trainer with a ``training_memory`` classmethod)."""
    if not callable(getattr(trainer, "training_memory", None)):
        raise PlanningError(
            f"{trainer.__name__} has no memory model: it is not built on nnunet_ext.trainers.nnUNetTrainerExt, so "
            f"nnunet-ext plan cannot predict the memory of its network. Base the trainer on nnUNetTrainerExt (its "
            f"network is then traced without data), or give it a classmethod training_memory(plans_manager, "
            f"configuration_manager, dataset_json, batch_size, precision) (README, 'Plug-ins'). nnU-Net's own "
            f"trainers are planned by nnUNetv2_plan_experiment.")


@dataclass
class _Candidate:
    configuration: str
    activation_checkpointing: bool
    batch_dice: bool
    architecture: dict | None = None
    shrinks: int = 0


class ArchitectureAwarePlanner(ExperimentPlanner):
    """nnU-Net's ``ExperimentPlanner`` with the trainer's predicted training-step memory as its estimate.

    Args:
        dataset_name_or_id: the dataset (its fingerprint must exist in nnUNet_preprocessed).
        trainer: the trainer class (``nnUNetTrainerExt`` or one with a ``training_memory`` classmethod).
        gpu_memory_target_in_gb: the memory one training step may use, in GB.
        precision: ``amp`` (autocast, as nnU-Net trains on CUDA) or ``fp32``.
        checkpointing: ``auto`` (on only where it buys a larger patch), ``on`` or ``off``.
        configurations: configurations to plan, among ``2d`` and ``3d_fullres`` (default: those the trainer supports).
        plans_name: plans identifier (default ``nnUNetPlans_<network>_<G>G``).
    """

    def __init__(self, dataset_name_or_id: str | int, trainer: type, gpu_memory_target_in_gb: float = 8,
                 precision: str = "amp", checkpointing: Checkpointing = "auto",
                 configurations: list[str] | None = None, plans_name: str | None = None):
        require_memory_model(trainer)
        dims = getattr(trainer, "supported_dims", (2, 3))
        supported = [c for c in PLANNED_CONFIGURATIONS if (2 if c == "2d" else 3) in dims]
        wrong = [c for c in configurations or [] if c not in supported]
        if wrong:
            raise PlanningError(f"nnunet-ext plan cannot plan {', '.join(wrong)} for {trainer.__name__}: it plans "
                                f"{' and '.join(supported) or 'nothing'} for this trainer (2d and 3d_fullres share "
                                f"nnUNetPlans' preprocessed data). Use -c {' '.join(supported)}.")
        if precision not in ("amp", "fp32") or checkpointing not in ("auto", "on", "off"):
            raise PlanningError(f"precision must be amp or fp32 and checkpointing auto, on or off; got "
                                f"{precision!r} and {checkpointing!r}.")
        if not gpu_memory_target_in_gb > 0:
            raise PlanningError(f"-gpu_memory_target must be a positive number of GB, got {gpu_memory_target_in_gb}.")
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb,
                         plans_name=plans_name or default_plans_name(trainer, gpu_memory_target_in_gb))
        self.trainer = trainer
        self.precision = precision
        self.checkpointing = checkpointing
        self.configurations = list(configurations or supported)
        self.lowres_creation_threshold = 0  # no 3d_lowres: its spacing would depend on the network's patch
        # nnU-Net's loop shrinks while estimate / ref_bs * 2 > reference * target / reference_GB: with these values
        # that reads "predicted GB at batch size 2 > target GB"
        self.UNet_reference_val_2d = self.UNet_reference_val_3d = gpu_memory_target_in_gb
        self.UNet_reference_val_corresp_GB = gpu_memory_target_in_gb
        self.UNet_reference_val_corresp_bs_2d = self.UNet_reference_val_corresp_bs_3d = 2
        self._candidate: _Candidate | None = None
        self._memory_cache: dict = {}

    def generate_data_identifier(self, configuration_name: str) -> str:
        return "nnUNetPlans_" + configuration_name  # nnUNetPlans' data: same spacing, normalisation and resampling

    # ---- the estimate -------------------------------------------------------------------------------------------

    def admissible_patch(self, candidate) -> list[int]:
        """The patch the trainer trains with for nnU-Net's ``candidate`` (``adjust_patch_size``); _BelowMinimum
        when the candidate is below nnU-Net's smallest feature-map edge or the trainer's minimum."""
        candidate = [int(p) for p in candidate]
        if min(candidate) < self.UNet_featuremap_min_edge_length:
            raise _BelowMinimum
        try:
            return [int(p) for p in self.trainer.adjust_patch_size(candidate)]
        except ValueError as error:
            raise _BelowMinimum from error

    def training_memory(self, patch: list[int], batch_size: int):
        """The trainer's predicted ``TrainingMemory`` at ``patch`` and ``batch_size`` for the configuration being
        planned (cached)."""
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        candidate = self._candidate
        key = (candidate.configuration, tuple(patch), batch_size, candidate.activation_checkpointing)
        if key not in self._memory_cache:
            settings = {"patch_size": list(patch), "batch_size": batch_size,
                        "batch_dice": candidate.batch_dice, "architecture": candidate.architecture,
                        PLANS_KEY: {"activation_checkpointing": candidate.activation_checkpointing}}
            plans = {"dataset_name": self.dataset_name, "plans_name": self.plans_identifier,
                     "label_manager": "LabelManager", "configurations": {candidate.configuration: settings}}
            manager = PlansManager(plans)
            try:
                self._memory_cache[key] = self.trainer.training_memory(
                    manager, manager.get_configuration(candidate.configuration), self.dataset_json, batch_size,
                    self.precision)
            except Exception as error:
                raise PlanningError(
                    f"The memory model cannot trace {self.trainer.__name__}'s network at patch {list(patch)}: "
                    f"{type(error).__name__}: {error}. A network the generic trace cannot follow needs its own "
                    f"training_memory classmethod on the trainer (README, 'Plug-ins').") from error
        return self._memory_cache[key]

    def static_estimate_VRAM_usage(self, patch_size, input_channels, output_channels, arch_class_name, arch_kwargs,
                                   arch_kwargs_req_import) -> float:
        # called by nnU-Net's get_plans_for_configuration for every candidate patch: GB at batch size 2
        candidate = self._candidate
        candidate.architecture = {"network_class_name": arch_class_name, "arch_kwargs": dict(arch_kwargs),
                                  "_kw_requires_import": list(arch_kwargs_req_import)}
        candidate.shrinks += 1
        return self.training_memory(self.admissible_patch(patch_size), 2).peak_gb

    # ---- one configuration --------------------------------------------------------------------------------------

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        name = "2d" if len(spacing) == 2 else "3d_fullres"
        if name not in self.configurations:  # plan_experiment plans both; this one is dropped before saving
            return {"spacing": spacing, "patch_size": [int(s) for s in median_shape]}
        self._require_minimum_fits(name, spacing, data_identifier)  # before a search down to the minimum
        modes = {"off": [False], "on": [True], "auto": [False, True]}[self.checkpointing]
        plans = []
        for checkpointing in modes:
            self._candidate = _Candidate(name, checkpointing, batch_dice=name == "2d")
            try:
                plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                           approximate_n_voxels_dataset, {})
            except _BelowMinimum:
                continue
            plans.append(self._finish_plan(plan, approximate_n_voxels_dataset))
            if self._candidate.shrinks <= 1:
                break  # the initial patch fits: checkpointing cannot buy a larger one
        if not plans:
            raise PlanningError(
                f"-gpu_memory_target {self.UNet_vram_target_GB:g} GB: nnU-Net's shrinking of {name}'s patch (the axis "
                f"largest relative to the median image first) reaches {self.trainer.__name__}'s minimum on one axis "
                f"before the patch fits. Give a larger -gpu_memory_target.")
        # checkpointing only where it buys a larger patch than planning without it
        return max(plans, key=lambda p: (math.prod(p["patch_size"]), not p[PLANS_KEY]["activation_checkpointing"]))

    def _finish_plan(self, plan: dict, approximate_n_voxels_dataset: float) -> dict:
        patch = self.admissible_patch(plan["patch_size"])
        covered = round(approximate_n_voxels_dataset * self.max_dataset_covered / np.prod(patch, dtype=np.float64))
        batch_size = self._largest_batch(patch, max(covered, self.UNet_min_batch_size))
        memory = self.training_memory(patch, batch_size)
        plan.update(patch_size=patch, batch_size=batch_size, batch_dice=self._candidate.batch_dice)
        plan[PLANS_KEY] = {"predicted_memory_gb": round(memory.peak_gb, 4),
                           "gpu_memory_target_gb": self.UNet_vram_target_GB, "precision": self.precision,
                           "activation_checkpointing": self._candidate.activation_checkpointing}
        return plan

    def _largest_batch(self, patch: list[int], cap: int) -> int:
        """The largest batch size up to ``cap`` whose predicted memory fits (2 does: the patch was shrunk for it).

        Activations grow linearly with the batch, but the step's peak can move (from the optimizer step to the
        backward pass, say): REC-UNet at 128x128 is 7 % above the line through batch 2 and 3 at batch 6 and 14 %
        at 12. So the line gives the first probe and its neighbour, and a bisection between the sizes known to fit
        and not to fit settles the rest (a few traces)."""
        if cap <= 2:
            return 2
        target = self.UNet_vram_target_GB
        fits = {2: True}

        def fit(batch: int) -> bool:
            if batch not in fits:
                fits[batch] = self.training_memory(patch, batch).peak_gb <= target
            return fits[batch]

        at2 = self.training_memory(patch, 2).peak_gb
        per_sample = self.training_memory(patch, 3).peak_gb - at2
        guess = cap if per_sample <= 0 else max(3, min(cap, 2 + int((target - at2) / per_sample)))
        low, high = 2, cap + 1  # fits at low, not at high (cap + 1: beyond the cap)
        for probe in (guess, guess + 1 if fit(guess) else guess - 1):
            if low < probe < high:
                low, high = (probe, high) if fit(probe) else (low, probe)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if fit(middle) else (low, middle)
        return low

    def smallest_admissible_patch(self, dim: int) -> list[int]:
        """The smallest cubic/square candidate the trainer accepts, as the trainer trains it."""
        for edge in range(self.UNet_featuremap_min_edge_length, 1025):
            with contextlib.suppress(_BelowMinimum):
                return self.admissible_patch([edge] * dim)
        raise PlanningError(f"{self.trainer.__name__}.adjust_patch_size accepts no patch up to 1024 per axis.")

    def _require_minimum_fits(self, name: str, spacing, data_identifier: str) -> None:
        # the least memory allowed: the smallest patch, with checkpointing unless it is off. nnU-Net's planning of an
        # image of that size gives the network's topology there (for trainers that build from the plans)
        self._candidate = _Candidate(name, self.checkpointing != "off", batch_dice=name == "2d")
        patch = self.smallest_admissible_patch(len(spacing))
        with contextlib.suppress(_BelowMinimum):
            super().get_plans_for_configuration(spacing, patch, data_identifier, 1.0, {})
        memory = self.training_memory(patch, 2).peak_gb
        if memory > self.UNet_vram_target_GB:
            raise PlanningError(
                f"-gpu_memory_target {self.UNet_vram_target_GB:g} GB is too small for {self.trainer.__name__} "
                f"({self._candidate.configuration}, {self.precision}"
                f"{', with activation checkpointing' if self._candidate.activation_checkpointing else ''}): it needs "
                f"{memory:.3g} GB at its smallest admissible patch {patch} with batch size 2. Give at least "
                f"-gpu_memory_target {math.ceil(memory * 100) / 100:g}.")

    # ---- the plans file -----------------------------------------------------------------------------------------

    def plan_experiment(self) -> dict:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every configuration dict
            return super().plan_experiment()

    def save_plans(self, plans: dict) -> None:
        from batchgenerators.utilities.file_and_folder_operations import save_json
        from nnunetv2.paths import nnUNet_preprocessed
        from nnunetv2.utilities.json_export import recursive_fix_for_json_export

        plans["configurations"] = {c: p for c, p in plans["configurations"].items() if c in self.configurations}
        if not plans["configurations"]:
            raise PlanningError(f"Dataset {self.dataset_name} has no configuration {self.trainer.__name__} can "
                                f"train ({', '.join(self.configurations)}): is it a 2D dataset for a 3D network?")
        plans[PLANS_KEY] = {"trainer": self.trainer.__name__}
        recursive_fix_for_json_export(plans)
        save_json(plans, str(Path(nnUNet_preprocessed, self.dataset_name, self.plans_identifier + ".json")),
                  sort_keys=False)


# ---- checks around planning -----------------------------------------------------------------------------------

def require_fingerprint(dataset_name: str, paths: dict[str, Path]) -> None:
    if not (paths["nnUNet_preprocessed"] / dataset_name / "dataset_fingerprint.json").is_file():
        raise PlanningError(f"Dataset {dataset_name} has no fingerprint ({paths['nnUNet_preprocessed']}/"
                            f"{dataset_name}/dataset_fingerprint.json). Run nnU-Net's fingerprint extraction first: "
                            f"nnUNetv2_extract_fingerprint -d {int(dataset_name[7:10])} (or "
                            f"nnUNetv2_plan_and_preprocess -d {int(dataset_name[7:10])}, which also preprocesses the "
                            f"data nnunet-ext plan reuses).")


def check_shared_data(plans: dict, reference_file: Path) -> None:
    """PlanningError if ``nnUNetPlans`` exists with other spacing, normalisation or resampling for a configuration
    than ``plans``: the shared data identifier would then name data preprocessed differently."""
    if not reference_file.is_file():
        return
    reference = json.loads(reference_file.read_text())
    for name, planned in plans["configurations"].items():
        theirs = reference["configurations"].get(name)
        if theirs is None:
            continue
        differing = [k for k in SHARED_SETTINGS if json.dumps(theirs.get(k)) != json.dumps(planned.get(k))]
        if reference.get("transpose_forward") != plans["transpose_forward"]:
            differing.append("transpose_forward")
        if differing:
            raise PlanningError(
                f"{reference_file} plans {name} with other {', '.join(differing)} than nnU-Net's planner does now, "
                f"so its preprocessed data ({planned['data_identifier']}) cannot be shared. Re-plan it with "
                f"nnUNetv2_plan_and_preprocess -d {plans['dataset_name'][7:10]} -c {name} --clean, then run "
                f"nnunet-ext plan again.")


def plan(dataset: str, trainer_name: str, configurations: list[str] | None = None, gpu_memory_target_gb: float = 8,
         precision: str = "amp", checkpointing: Checkpointing = "auto", plans_name: str | None = None,
         overwrite: bool = False) -> tuple[Path, dict]:
    """Plan ``dataset`` for ``trainer_name`` and write the plans file; returns its path and the plans."""
    from nnunet_ext.catalog import resolve_trainer

    paths = checks.require_nnunet_paths()
    dataset_name = datasets.dataset_name(dataset)
    trainer = resolve_trainer(trainer_name)
    require_memory_model(trainer)
    name = plans_name or default_plans_name(trainer, gpu_memory_target_gb)
    plans_file = paths["nnUNet_preprocessed"] / dataset_name / f"{name}.json"
    if name == "nnUNetPlans":
        raise PlanningError("The plans name nnUNetPlans belongs to nnU-Net's own plans; choose another name.")
    if plans_file.exists() and not overwrite:
        raise PlanningError(f"Plans {plans_file} exist already; left untouched. Pass --overwrite to replace them, or "
                            f"-overwrite_plans_name NAME to write other plans.")
    require_fingerprint(dataset_name, paths)
    planner = ArchitectureAwarePlanner(dataset_name, trainer, gpu_memory_target_gb, precision, checkpointing,
                                       configurations, name)
    plans = planner.plan_experiment()
    check_shared_data(plans, paths["nnUNet_preprocessed"] / dataset_name / "nnUNetPlans.json")
    planner.save_plans(plans)
    return plans_file, plans


def predicted_training_memory(trainer: type, plans: dict, configuration: str, dataset_json: dict,
                              precision: str | None = None):
    """The trainer's predicted training memory at the plan it trains with (its ``adjust_patch_size`` applied, the
    plans' batch size). Precision: ``precision``, else the one the plans were made for, else amp where CUDA is
    available and fp32 elsewhere. Returns (``TrainingMemory``, precision, patch, batch size)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    require_memory_model(trainer)
    plans = copy.deepcopy(plans)
    settings = PlansManager(plans).get_configuration(configuration).configuration
    settings["patch_size"] = [int(p) for p in trainer.adjust_patch_size(list(settings["patch_size"]))]
    precision = precision or settings.get(PLANS_KEY, {}).get("precision") or \
        ("amp" if torch.cuda.is_available() else "fp32")
    plans["configurations"][configuration] = settings
    manager = PlansManager(plans)
    trained = manager.get_configuration(configuration)
    try:
        memory = trainer.training_memory(manager, trained, dataset_json, trained.batch_size, precision)
    except Exception as error:
        raise PlanningError(f"The memory model cannot trace {trainer.__name__}'s network at patch "
                            f"{settings['patch_size']}: {type(error).__name__}: {error}. A network the generic trace "
                            f"cannot follow needs its own training_memory classmethod on the trainer (README, "
                            f"'Plug-ins').") from error
    return memory, precision, settings["patch_size"], trained.batch_size


def format_table(plans: dict, reference: dict | None) -> str:
    """The planned configurations, with nnUNetPlans' patch and batch where ``reference`` has them."""
    header = ("configuration", "patch", "batch", "predicted GB", "target GB", "precision", "checkpointing",
              "nnUNetPlans patch x batch")
    rows = [header]
    for name, settings in plans["configurations"].items():
        planned = settings[PLANS_KEY]
        theirs = (reference or {}).get("configurations", {}).get(name)
        rows.append((name, "x".join(map(str, settings["patch_size"])), str(settings["batch_size"]),
                     f"{planned['predicted_memory_gb']:.2f}", f"{planned['gpu_memory_target_gb']:g}",
                     planned["precision"], "on" if planned["activation_checkpointing"] else "off",
                     f"{'x'.join(map(str, theirs['patch_size']))} x {theirs['batch_size']}" if theirs else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
