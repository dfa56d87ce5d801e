"""Which dataset an id or a name means, in one place.

``dataset_name`` resolves as nnU-Net's own commands do (``maybe_convert_to_dataset_name``: the ``DatasetXXX_*``
folders of nnUNet_preprocessed, nnUNet_raw and nnUNet_results), and where nnU-Net would stop with a generic
message, says which datasets there are and what to do. ``folders_with_id`` is the one scan of a single folder,
for writing a new raw dataset (``nnunet-ext synth``).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class DatasetNotFoundError(FileNotFoundError):
    """No dataset, or several, for an id or name; the message lists those there are and says what to do."""


def folders_with_id(root: Path, dataset_id: int) -> list[Path]:
    """The ``DatasetXXX_*`` folders of ``dataset_id`` directly in ``root`` (none if ``root`` does not exist)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"Dataset{dataset_id:03d}_*") if p.is_dir())


def _known_datasets() -> dict[str, list[str]]:
    """Every dataset folder name, with the nnU-Net folders (environment variables) that hold it."""
    known: dict[str, list[str]] = {}
    for variable in NNUNET_FOLDERS:
        root = Path(os.environ[variable]) if os.environ.get(variable) else None
        if root is not None and root.is_dir():
            for folder in root.iterdir():
                if folder.is_dir() and re.fullmatch(r"Dataset\d{3}_.+", folder.name):
                    known.setdefault(folder.name, []).append(variable)
    return known


def _searched() -> str:
    return ", ".join(f"{v}={os.environ.get(v) or '(unset)'}" for v in NNUNET_FOLDERS)


def dataset_name(dataset: str | int) -> str:
    """The folder name ``DatasetXXX_Name`` of a dataset id (``5``, ``"005"``) or name, as nnU-Net resolves it.

    Raises:
        DatasetNotFoundError: no dataset of that id or name in nnU-Net's folders (the message lists those there
            are), or several names for one id (nnU-Net refuses those too; the message names them).
        ValueError: ``dataset`` is neither an id nor a ``Dataset...`` name.
    """
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets, maybe_convert_to_dataset_name

    text = str(dataset).strip()
    if not (text.isdigit() or text.startswith("Dataset")):
        raise ValueError(f"'{dataset}' is neither a dataset id (e.g. 5) nor a dataset name (e.g. Dataset005_Liver).")
    if text.isdigit() and len(candidates := find_candidate_datasets(int(text))) > 1:
        raise DatasetNotFoundError(f"Several datasets have id {int(text)}: {', '.join(candidates)} ({_searched()}). "
                                   "nnU-Net needs one name per id: remove or renumber the others.")
    known = _known_datasets()
    try:
        name = maybe_convert_to_dataset_name(text)
    except RuntimeError:  # no folder of that id
        name = None
    if name not in known:
        raise DatasetNotFoundError(
            f"Dataset '{dataset}' not found ({_searched()}). Existing datasets: {', '.join(sorted(known)) or 'none'}. "
            "Create it (nnU-Net's dataset conversion, or `nnunet-ext synth ID` for synthetic data), fix the id, or "
            "set the nnU-Net folders.")
    return name
