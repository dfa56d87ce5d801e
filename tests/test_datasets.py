"""The one dataset lookup: nnU-Net's resolution of ids and names, with errors that list what there is."""
from pathlib import Path

import pytest

from nnunet_ext.datasets import DatasetNotFoundError, dataset_name, folders_with_id


@pytest.fixture
def nnunet_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    folders = {variable: tmp_path / variable for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for variable, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(variable, str(folder))
    return folders


def test_ids_and_names_resolve_as_nnunet_resolves_them(nnunet_folders):
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    (nnunet_folders["nnUNet_raw"] / "Dataset005_Liver").mkdir()
    (nnunet_folders["nnUNet_results"] / "Dataset012_Kidney").mkdir()  # a trained model only: detect needs no raw data
    for dataset, expected in (("5", "Dataset005_Liver"), (5, "Dataset005_Liver"), ("005", "Dataset005_Liver"),
                              ("Dataset005_Liver", "Dataset005_Liver"), ("12", "Dataset012_Kidney")):
        assert dataset_name(dataset) == expected == maybe_convert_to_dataset_name(str(dataset))


def test_a_missing_dataset_lists_those_there_are(nnunet_folders):
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset005_Liver").mkdir()
    for dataset in ("9", "Dataset009_Pancreas"):  # nnU-Net itself passes an unknown name through unchecked
        with pytest.raises(DatasetNotFoundError, match="Existing datasets: Dataset005_Liver") as error:
            dataset_name(dataset)
        assert "nnunet-ext synth" in str(error.value) and str(nnunet_folders["nnUNet_raw"]) in str(error.value)


def test_two_names_for_one_id_are_named(nnunet_folders):
    (nnunet_folders["nnUNet_raw"] / "Dataset007_Old").mkdir()
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset007_New").mkdir()
    with pytest.raises(DatasetNotFoundError, match="Several datasets have id 7: Dataset007_New, Dataset007_Old"):
        dataset_name("7")


def test_neither_id_nor_name_is_refused(nnunet_folders):
    with pytest.raises(ValueError, match="neither a dataset id"):
        dataset_name("liver")


def test_folders_with_id_scans_one_folder(tmp_path):
    assert folders_with_id(tmp_path / "missing", 51) == []
    (tmp_path / "Dataset510_NotThisOne").mkdir()
    (tmp_path / "Dataset051_First").mkdir()
    (tmp_path / "Dataset051_AFile.txt").write_text("")
    assert folders_with_id(tmp_path, 51) == [tmp_path / "Dataset051_First"]
