"""The trainers this package offers and what ``nnunet-ext list`` shows about them."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_ext.architectures.profiling import count_parameters

CONFIGURATIONS_BY_DIM = {2: ("2d",), 3: ("3d_fullres", "3d_lowres", "3d_cascade_fullres")}


class UnknownTrainerError(LookupError):
    """A trainer name that nnunet-ext does not provide."""


def trainer_classes() -> dict[str, type]:
    """Every trainer class exported by ``nnunet_ext.trainers`` (full-length and short variants), by name."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext import trainers

    return {name: obj for name in trainers.__all__
            if isinstance(obj := getattr(trainers, name), type) and issubclass(obj, nnUNetTrainer)
            and getattr(obj, "network_class", True) is not None}  # drops only the abstract nnUNetTrainerExt


def resolve_trainer(name: str) -> type:
    """A trainer class by name: one of ours, or one of nnU-Net's own; UnknownTrainerError lists ours otherwise."""
    ours = trainer_classes()
    if name in ours:
        return ours[name]
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    builtin = recursive_find_python_class(str(Path(nnunetv2.__path__[0], "training", "nnUNetTrainer")), name,
                                          "nnunetv2.training.nnUNetTrainer")
    if builtin is None:
        raise UnknownTrainerError(f"Unknown trainer '{name}': neither nnU-Net's nor one of nnunet-ext's "
                                  f"({', '.join(sorted(ours))}).")
    return builtin


def supported_configurations(trainer: type) -> tuple[str, ...]:
    dims = getattr(trainer, "supported_dims", (2, 3))
    return tuple(c for d in dims for c in CONFIGURATIONS_BY_DIM[d])


@dataclass(frozen=True)
class TrainerInfo:
    name: str
    network: str
    dims: str
    configurations: str
    parameters: int
    variants: str


def describe(trainer: type) -> TrainerInfo:
    """What ``nnunet-ext list`` prints about one full-length trainer."""
    network = trainer.reference_network()
    variants = sorted(n for n in trainer_classes() if n.startswith(trainer.__name__ + "_"))
    return TrainerInfo(
        name=trainer.__name__,
        network=type(network).__name__,
        dims="/".join(f"{d}D" for d in trainer.supported_dims),
        configurations=", ".join(supported_configurations(trainer)),
        parameters=count_parameters(network),
        variants=", ".join(v.removeprefix(trainer.__name__) for v in variants),
    )
