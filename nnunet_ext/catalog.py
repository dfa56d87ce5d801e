"""The trainers on offer, nnunet-ext's own and those of plug-in packages, and what ``nnunet-ext list`` shows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nnunet_ext.architectures.profiling import count_parameters
from nnunet_ext.plugins import scan

CONFIGURATIONS_BY_DIM = {2: ("2d",), 3: ("3d_fullres", "3d_lowres", "3d_cascade_fullres")}
OUR_PACKAGE = "nnunet-ext"


class UnknownTrainerError(LookupError):
    """A trainer name that neither nnU-Net, nnunet-ext nor an installed plug-in provides."""


def _is_concrete(trainer: type) -> bool:
    return getattr(trainer, "network_class", True) is not None  # drops abstract bases such as nnUNetTrainerExt


def trainer_classes() -> dict[str, type]:
    """Every trainer class of nnunet-ext (``nnunet_ext.trainers``) and of the installed plug-in packages
    (``nnunet_ext.plugins``), full-length and short variants, by name. A name that two packages export is
    ambiguous and left out (``resolve_trainer`` raises its clash error)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext import trainers

    plugins = scan()
    ours = {name: obj for name in trainers.__all__
            if isinstance(obj := getattr(trainers, name), type) and issubclass(obj, nnUNetTrainer)}
    found = {**ours, **{name: entry.cls for name, entry in plugins.trainers.items()}}
    return {name: cls for name, cls in found.items() if _is_concrete(cls) and name not in plugins.clashes}


def resolve_trainer(name: str) -> type:
    """A trainer class by name: nnunet-ext's, a plug-in's, or one of nnU-Net's own.

    Raises:
        TrainerNameClashError: two installed packages export ``name`` (the message names both).
        UnknownTrainerError: nobody provides ``name`` (the message lists the trainers on offer).
    """
    clash = scan().clash_error(name)
    if clash is not None:
        raise clash
    known = trainer_classes()
    if name in known:
        return known[name]
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    builtin = recursive_find_python_class(str(Path(nnunetv2.__path__[0], "training", "nnUNetTrainer")), name,
                                          "nnunetv2.training.nnUNetTrainer")
    if builtin is None:
        raise UnknownTrainerError(f"Unknown trainer '{name}': neither nnU-Net's nor one of nnunet-ext's or its "
                                  f"plug-ins' ({', '.join(sorted(known))}).")
    return builtin


def package_of(trainer: type) -> str:
    """The package that provides ``trainer``: ``nnunet-ext``, or a plug-in's distribution name and version."""
    entry = scan().trainers.get(trainer.__name__)
    return entry.package if entry is not None and entry.cls is trainer else OUR_PACKAGE


def listed_trainers() -> list[type]:
    """The full-length trainers ``nnunet-ext list`` shows: nnunet-ext's, then each plug-in's (a plug-in trainer
    named ``<other trainer>_<suffix>`` counts as a short variant of that other trainer)."""
    from nnunet_ext.trainers import BASELINES, TRAINERS

    known = trainer_classes()
    plugins = scan()
    plugin_names = sorted(name for name in plugins.trainers if name in known)
    parents = [*plugins.trainers, *plugins.clashes]  # the variant of an ambiguous trainer is not full-length
    plugin_full = [known[name] for name in plugin_names
                   if not any(name.startswith(parent + "_") for parent in parents)]
    return [t for t in (*TRAINERS, *BASELINES) if t.__name__ in known] + plugin_full


def supported_configurations(trainer: type) -> tuple[str, ...]:
    dims = getattr(trainer, "supported_dims", (2, 3))
    return tuple(c for d in dims for c in CONFIGURATIONS_BY_DIM[d])


@dataclass(frozen=True)
class TrainerInfo:
    name: str
    network: str
    dims: str
    configurations: str
    parameters: int | None
    variants: str
    package: str = OUR_PACKAGE


def describe(trainer: type) -> TrainerInfo:
    """What ``nnunet-ext list`` prints about one full-length trainer. A plug-in trainer that is not built on
    ``nnUNetTrainerExt`` (no ``reference_network``) shows its network as '-' and its parameters as None."""
    network = trainer.reference_network() if hasattr(trainer, "reference_network") else None
    variants = sorted(n for n in trainer_classes() if n.startswith(trainer.__name__ + "_"))
    dims = getattr(trainer, "supported_dims", (2, 3))
    return TrainerInfo(
        name=trainer.__name__,
        network=type(network).__name__ if network is not None else "-",
        dims="/".join(f"{d}D" for d in dims),
        configurations=", ".join(supported_configurations(trainer)),
        parameters=count_parameters(network) if network is not None else None,
        variants=", ".join(v.removeprefix(trainer.__name__) for v in variants),
        package=package_of(trainer),
    )

