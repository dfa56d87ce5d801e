"""What a model costs: its network's size and the times its training logs record.

Cost: parameters and FLOPs (2 x multiply-accumulates, ``architectures.profiling``) of the network that
``nnUNetv2_predict`` builds (``build_network_architecture`` with the results folder's plans, no deep supervision),
for one patch of the plan; seconds per epoch from ``Epoch time`` in the training logs; seconds per validation
case from the log's time stamps (sliding-window prediction and export); peak memory when a log reports it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from nnunet_ext.benchmarking.results import Model, read_json


@dataclass
class Cost:
    parameters: int | None = None
    flops: float | None = None  # per forward pass of one patch
    patch_size: list[int] = field(default_factory=list)
    epoch_seconds: float | None = None
    epochs_logged: int = 0
    seconds_per_case: float | None = None
    peak_memory_mib: float | None = None


TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?): (.*)$")
EPOCH_TIME = re.compile(r"Epoch time: ([\d.]+) s")
PEAK_MEMORY = re.compile(r"peak[ _](?:gpu |cuda |)memory[^0-9]*([\d.]+)\s*(MiB|MB|GiB|GB)", re.IGNORECASE)


def network_size(model: Model, trainer_class: type) -> tuple[int, float, list[int]]:
    """(parameters, FLOPs per patch, patch size) of the network nnU-Net builds to predict with this model."""
    import torch

    from nnunet_ext.architectures.profiling import count_macs, count_parameters
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(str(model.folder / "plans.json"))
    configuration = plans_manager.get_configuration(model.configuration)
    dataset_json = read_json(model.folder / "dataset.json")
    channels = determine_num_input_channels(plans_manager, configuration, dataset_json)
    outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    patch = [int(p) for p in configuration.patch_size]

    def build():
        return trainer_class.build_network_architecture(plans_manager, configuration, channels, outputs,
                                                        enable_deep_supervision=False)

    try:  # the meta device counts a full-size 3D patch without allocating it
        with torch.device("meta"):
            network = build()
        macs = count_macs(network, (1, channels, *patch), device="meta")
    except (NotImplementedError, RuntimeError):
        network = build()
        macs = count_macs(network, (1, channels, *patch), device="cpu")
    return count_parameters(network), 2.0 * macs, patch


def _log_lines(fold_folder: Path) -> list[tuple[list[str], Path]]:
    return [(path.read_text(errors="replace").splitlines(), path)
            for path in sorted(fold_folder.glob("training_log_*.txt"))]


def _time(line: str) -> datetime | None:
    match = TIMESTAMP.match(line)
    return datetime.fromisoformat(match.group(1)) if match else None


def validation_seconds_per_case(lines: list[str]) -> float | None:
    """Seconds from the first 'predicting CASE' to 'Validation complete', per case, in one training log."""
    starts = [_time(line) for line in lines if ": predicting " in line]
    ends = [_time(line) for line in lines if "Validation complete" in line]
    if not starts or not ends or starts[0] is None or ends[-1] is None:
        return None
    return (ends[-1] - starts[0]).total_seconds() / len(starts)


def model_cost(model: Model, trainer_class: type) -> Cost:
    cost = Cost()
    cost.parameters, cost.flops, cost.patch_size = network_size(model, trainer_class)
    epoch_times, per_case, peaks = [], [], []
    for fold in model.folds:
        logs = _log_lines(model.folder / f"fold_{fold}")
        for lines, _ in logs:
            epoch_times += [float(m.group(1)) for line in lines if (m := EPOCH_TIME.search(line))]
            for line in lines:
                if match := PEAK_MEMORY.search(line):
                    value = float(match.group(1))
                    peaks.append(value * 1024 if match.group(2).lower().startswith("g") else value)
        validated = [s for lines, _ in logs if (s := validation_seconds_per_case(lines)) is not None]
        if validated:
            per_case.append(validated[-1])  # the latest validation of this fold
    cost.epochs_logged = len(epoch_times)
    cost.epoch_seconds = float(np.mean(epoch_times)) if epoch_times else None
    cost.seconds_per_case = float(np.mean(per_case)) if per_case else None
    cost.peak_memory_mib = max(peaks) if peaks else None
    return cost
