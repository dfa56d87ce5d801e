"""The trained nnU-Net models of the RCC detection workflow: which folder and folds, what ``check_model`` learns
from them before any prediction, and nnU-Net's predictor over them."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunet_ext.datasets import dataset_name

__all__ = ["ModelSpec", "ModelInfo", "resolve_model_folder", "available_folds", "default_folds", "check_model",
           "make_predictor", "predict"]

SUPPORTED_READER = "SimpleITKIO"


@dataclass(frozen=True)
class ModelSpec:
    """A trained nnU-Net model folder (``.../Trainer__Plans__configuration``) and what to predict with."""

    folder: Path
    folds: tuple[str, ...]
    checkpoint: str = "checkpoint_final.pth"


@dataclass
class ModelInfo:
    """What ``check_model`` learnt about a model: enough to refuse bad input before any prediction."""

    spec: ModelSpec
    num_channels: int
    channel_names: list[str]
    file_ending: str
    labels: dict[str, int]
    has_regions: bool
    output_values: list[int]

    def probability_channel(self, label: int) -> int:
        """Index of ``label``'s channel in nnU-Net's probabilities (region order, or the label value itself)."""
        return self.output_values.index(label) if self.has_regions else label

    def describe(self) -> dict:
        trainer, plans, configuration = (self.spec.folder.name.split("__") + ["?", "?", "?"])[:3]
        return {"folder": str(self.spec.folder), "dataset": self.spec.folder.parent.name, "trainer": trainer,
                "plans": plans, "configuration": configuration, "folds": list(self.spec.folds),
                "checkpoint": self.spec.checkpoint, "labels": self.labels}


def resolve_model_folder(dataset: str, configuration: str, trainer: str, plans: str = "nnUNetPlans") -> Path:
    """The model folder ``$nnUNet_results/DatasetXXX_Name/trainer__plans__configuration`` of a dataset id or name."""
    results_dir = os.environ.get("nnUNet_results")
    if not results_dir:
        raise RuntimeError("nnUNet_results is not set: set it to the folder with your trained models, or name the "
                           "model folder itself with -m.")
    results = Path(results_dir)
    trained_dataset = results / dataset_name(dataset)
    if not trained_dataset.is_dir():
        known = sorted(p.name for p in results.glob("Dataset*")) if results.is_dir() else []
        raise FileNotFoundError(f"No trained dataset {trained_dataset.name} in {results}; it holds: "
                                f"{', '.join(known) or 'nothing'}.")
    folder = trained_dataset / f"{trainer}__{plans}__{configuration}"
    if not folder.is_dir():
        trained = sorted(p.name for p in trained_dataset.iterdir() if p.is_dir())
        raise FileNotFoundError(f"No model {folder.name} in {trained_dataset}; trained there: "
                                f"{', '.join(trained) or 'none'}. Check -tr, -c and -p, or train it with "
                                "nnUNetv2_train.")
    return folder


def available_folds(folder: Path, checkpoint: str = "checkpoint_final.pth") -> list[str]:
    """Folds of a model folder that hold ``checkpoint``: 0..4 in order, then 'all'."""
    folds = [p.name.removeprefix("fold_") for p in folder.glob("fold_*") if (p / checkpoint).is_file()]
    return sorted(folds, key=lambda f: (not f.isdigit(), int(f) if f.isdigit() else 0))


def default_folds(folder: Path, checkpoint: str = "checkpoint_final.pth") -> tuple[str, ...]:
    """Like nnU-Net: every numbered fold with a checkpoint; 'all' only when there is no numbered fold."""
    folds = available_folds(folder, checkpoint)
    numbered = tuple(f for f in folds if f != "all")
    return numbered or tuple(folds)


def check_model(spec: ModelSpec, labels: dict[str, int]) -> ModelInfo:
    """Check a model folder before any prediction: files, folds, image reader and the labels a rule needs.

    ``labels`` maps a role ("kidney", "tumour") to the label value the model must predict for it.
    Raises FileNotFoundError (missing folder, files or folds) or ValueError (labels, reader).
    """
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = spec.folder
    for name in ("dataset.json", "plans.json"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} is not a trained nnU-Net model folder (no {name}). Name the folder "
                                    "that holds fold_X/, plans.json and dataset.json.")
    found = available_folds(folder, spec.checkpoint)
    if not spec.folds:
        raise FileNotFoundError(f"No fold of {folder} has {spec.checkpoint}; train one with nnUNetv2_train first.")
    missing = [f for f in spec.folds if f not in found]
    if missing:
        raise FileNotFoundError(f"Fold(s) {', '.join(missing)} of {folder} have no {spec.checkpoint}. Folds with one: "
                                f"{', '.join(found) or 'none'}; pass those with -f, or finish training the others.")
    dataset_json = json.loads((folder / "dataset.json").read_text())
    plans = json.loads((folder / "plans.json").read_text())
    reader = plans.get("image_reader_writer", SUPPORTED_READER)
    if reader != SUPPORTED_READER:
        raise ValueError(f"{folder} was planned with image reader {reader}; detect hands the model SimpleITK's "
                         f"arrays and geometry, which only matches {SUPPORTED_READER}.")
    label_manager = PlansManager(plans).get_label_manager(dataset_json)
    outputs = [int(v) for v in (label_manager.regions_class_order if label_manager.has_regions
                                else label_manager.foreground_labels)]
    names = {name: value for name, value in dataset_json["labels"].items() if name != "background"}
    for role, value in labels.items():
        if value not in outputs:
            raise ValueError(f"The {role} label {value} is not among the labels model {folder.name} predicts "
                             f"({', '.join(f'{n}={v}' for n, v in names.items())}; predicted values "
                             f"{outputs}). Pass --{'tumor' if role == 'tumour' else role}-label with one of them.")
    channel_names = [dataset_json["channel_names"][k] for k in sorted(dataset_json["channel_names"], key=int)]
    return ModelInfo(spec=spec, num_channels=len(channel_names), channel_names=channel_names,
                     file_ending=dataset_json.get("file_ending", ".nii.gz"), labels=names,
                     has_regions=label_manager.has_regions, output_values=outputs)


def make_predictor(spec: ModelSpec, device: str, use_mirroring: bool):
    """nnU-Net's predictor of a checked model (its folds ensembled), on ``device`` ("cpu", "cuda" or "mps")."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    device = torch.device(device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device,
                                allow_tqdm=True)  # nnU-Net's progress bar over the sliding window
    predictor.initialize_from_trained_model_folder(str(spec.folder), list(spec.folds), spec.checkpoint)
    return predictor


def predict(predictor, channels: np.ndarray, spacing_zyx: list[float], probability_channel: int | None):
    """nnU-Net's segmentation of a (C, z, y, x) array, and one channel of its probabilities if asked for."""
    result = predictor.predict_single_npy_array(channels, {"spacing": spacing_zyx}, None, None,
                                                probability_channel is not None)
    if probability_channel is None:
        return np.asarray(result), None
    segmentation, probabilities = result
    return np.asarray(segmentation), np.asarray(probabilities[probability_channel], dtype=np.float32)
