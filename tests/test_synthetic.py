"""Tests for nnunet_ext.synthetic: layout, geometry, labels, determinism, error handling and nnU-Net's own checks."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext import synthetic
from nnunet_ext.synthetic import find_dataset_folder, make_synthetic_dataset

CASES = 5  # the fewest that nnU-Net's 5-fold cross-validation accepts
TEST_CASES = 2


def read_array(path: pathlib.Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def case_ids(dataset: pathlib.Path, labels_folder: str) -> list[str]:
    return sorted(p.name[:-len(".nii.gz")] for p in (dataset / labels_folder).glob("*.nii.gz"))


def all_arrays(dataset: pathlib.Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(dataset)): read_array(p) for p in sorted(dataset.rglob("*.nii.gz"))}


@pytest.fixture(scope="module")
def dataset_3d(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_synthetic_dataset(11, dim=3, num_cases=CASES, num_test_cases=TEST_CASES,
                                  raw_dir=tmp_path_factory.mktemp("raw3d"))


@pytest.fixture(scope="module")
def dataset_2d(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_synthetic_dataset(12, dim=2, num_cases=CASES, num_test_cases=TEST_CASES,
                                  raw_dir=tmp_path_factory.mktemp("raw2d"))


@pytest.fixture(scope="module")
def dataset_multichannel_regions(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_synthetic_dataset(13, dim=3, num_cases=CASES, num_test_cases=1, channels=3, regions=True,
                                  shape=(16, 32, 32), raw_dir=tmp_path_factory.mktemp("raw_mc"))


@pytest.fixture
def dataset(request: pytest.FixtureRequest) -> pathlib.Path:
    return request.getfixturevalue(request.param)


both_dims = pytest.mark.parametrize("dataset", ["dataset_3d", "dataset_2d"], indirect=True)


@both_dims
def test_layout_and_dataset_json(dataset: pathlib.Path) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr",
                                                         "labelsTs"]
    train_ids = [f"case_{i:03d}" for i in range(CASES)]
    test_ids = [f"case_{i:03d}" for i in range(CASES, CASES + TEST_CASES)]
    assert case_ids(dataset, "labelsTr") == train_ids
    assert case_ids(dataset, "labelsTs") == test_ids
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [f"{c}_0000.nii.gz" for c in train_ids]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [f"{c}_0000.nii.gz" for c in test_ids]
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "CT"}
    assert dataset_json["labels"] == {"background": 0, "organ": 1, "tumour": 2}
    assert dataset_json["numTraining"] == CASES
    assert dataset_json["file_ending"] == ".nii.gz"
    assert "regions_class_order" not in dataset_json


def test_default_names(dataset_3d: pathlib.Path, dataset_2d: pathlib.Path,
                       dataset_multichannel_regions: pathlib.Path) -> None:
    assert dataset_3d.name == "Dataset011_Synth3D"
    assert dataset_2d.name == "Dataset012_Synth2D"
    assert dataset_multichannel_regions.name == "Dataset013_Synth3D3chRegions"


def test_3d_geometry(dataset_3d: pathlib.Path) -> None:
    for path in dataset_3d.rglob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        assert image.GetDimension() == 3
        assert image.GetSpacing() == pytest.approx((0.8, 0.8, 2.5))  # SimpleITK order: x, y, z
        assert sitk.GetArrayViewFromImage(image).shape == (32, 64, 64)  # numpy order: z, y, x


def test_2d_geometry(dataset_2d: pathlib.Path) -> None:
    for path in dataset_2d.rglob("*.nii.gz"):
        image = sitk.ReadImage(str(path))
        assert image.GetDimension() == 2
        assert image.GetSpacing() == pytest.approx((0.8, 0.8))
        assert sitk.GetArrayViewFromImage(image).shape == (96, 96)


@pytest.mark.parametrize(("dataset", "expected_shape", "expected_spacing"),
                         [("dataset_3d", (1, 32, 64, 64), [2.5, 0.8, 0.8]),
                          ("dataset_2d", (1, 1, 96, 96), [999 * 0.8, 0.8, 0.8])], indirect=["dataset"])
def test_nnunet_reader_sees_the_intended_geometry(dataset: pathlib.Path, expected_shape: tuple[int, ...],
                                                  expected_spacing: list[float]) -> None:
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    dataset_json = json.loads((dataset / "dataset.json").read_text())
    image_file = str(dataset / "imagesTr" / "case_000_0000.nii.gz")
    reader_class = determine_reader_writer_from_dataset_json(dataset_json, image_file, verbose=False)
    assert reader_class is SimpleITKIO
    images, properties = reader_class().read_images([image_file])
    segmentation, seg_properties = reader_class().read_seg(str(dataset / "labelsTr" / "case_000.nii.gz"))
    assert images.shape == segmentation.shape == expected_shape
    assert properties["spacing"] == pytest.approx(expected_spacing)
    assert seg_properties["spacing"] == pytest.approx(expected_spacing)


@both_dims
def test_every_case_has_organ_and_a_tumour_inside_it(dataset: pathlib.Path) -> None:
    for labels_folder in ("labelsTr", "labelsTs"):
        for case_id in case_ids(dataset, labels_folder):
            label = read_array(dataset / labels_folder / f"{case_id}.nii.gz")
            assert label.dtype == np.uint8
            assert set(np.unique(label)) == {0, 1, 2}, case_id
            organ, tumour = label > 0, label == 2
            assert 0.05 <= tumour.sum() / organ.sum() <= 0.15, case_id
            # Inside the organ: the voxels bordering the tumour are mostly organ, not background.
            shell = ndimage.binary_dilation(tumour) & ~tumour
            assert (label[shell] == 1).mean() > 0.75, case_id


@both_dims
def test_ct_intensities(dataset: pathlib.Path) -> None:
    for case_id in case_ids(dataset, "labelsTr"):
        ct = read_array(dataset / "imagesTr" / f"{case_id}_0000.nii.gz").astype(float)
        label = read_array(dataset / "labelsTr" / f"{case_id}.nii.gz")
        # Cores, away from partial-volume edges.
        organ_hu = np.median(ct[ndimage.binary_erosion(label > 0) & (label == 1)])
        tumour_hu = np.median(ct[ndimage.binary_erosion(label == 2)])
        assert 35 <= organ_hu <= 70, case_id
        assert tumour_hu - organ_hu >= 40, case_id
        assert np.median(ct[..., 0, :]) < -900, case_id  # the first row is air outside the body
        assert ct.min() >= -1024


@both_dims
def test_threshold_on_ct_finds_the_tumour(dataset: pathlib.Path) -> None:
    """The tumour is learnable: one HU threshold over the whole image finds it."""
    for case_id in case_ids(dataset, "labelsTr"):
        ct = read_array(dataset / "imagesTr" / f"{case_id}_0000.nii.gz")
        truth = read_array(dataset / "labelsTr" / f"{case_id}.nii.gz") == 2
        predicted = ct > 80
        dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert dice > 0.5, (case_id, dice)


def test_multichannel_layout_and_contrast(dataset_multichannel_regions: pathlib.Path) -> None:
    dataset = dataset_multichannel_regions
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "CT", "1": "T1", "2": "T2"}
    expected_images = sorted(f"case_{i:03d}_{c:04d}.nii.gz" for i in range(CASES) for c in range(3))
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == expected_images
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [f"case_{CASES:03d}_{c:04d}.nii.gz"
                                                                        for c in range(3)]
    label = read_array(dataset / "labelsTr" / "case_000.nii.gz")
    organ, tumour = label == 1, label == 2
    t1 = read_array(dataset / "imagesTr" / "case_000_0001.nii.gz").astype(float)
    t2 = read_array(dataset / "imagesTr" / "case_000_0002.nii.gz").astype(float)
    assert t1.min() >= 0 and t2.min() >= 0  # magnitude images
    assert np.median(t1[tumour]) < np.median(t1[organ])  # hypointense on T1
    assert np.median(t2[tumour]) > np.median(t2[organ])  # hyperintense on T2


def test_regions_dataset_json(dataset_multichannel_regions: pathlib.Path) -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    dataset_json = json.loads((dataset_multichannel_regions / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "organ": [1, 2], "tumour": [2]}
    assert dataset_json["regions_class_order"] == [1, 2]
    label_manager = LabelManager(dataset_json["labels"], regions_class_order=dataset_json["regions_class_order"])
    assert label_manager.has_regions
    assert label_manager.num_segmentation_heads == 2
    assert label_manager.all_labels == [0, 1, 2]


def test_same_seed_same_arrays_other_seed_other_arrays(tmp_path: pathlib.Path) -> None:
    options = dict(dim=3, num_cases=2, num_test_cases=1, channels=2, shape=(16, 32, 32))
    first = all_arrays(make_synthetic_dataset(21, raw_dir=tmp_path / "a", seed=7, **options))
    again = all_arrays(make_synthetic_dataset(21, raw_dir=tmp_path / "b", seed=7, **options))
    other = all_arrays(make_synthetic_dataset(21, raw_dir=tmp_path / "c", seed=8, **options))
    assert first.keys() == again.keys() == other.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
        assert not np.array_equal(first[key], other[key]), key
    # Cases differ from each other too, not only between seeds.
    assert not np.array_equal(first["labelsTr/case_000.nii.gz"], first["labelsTr/case_001.nii.gz"])


def test_custom_name_and_shape(tmp_path: pathlib.Path) -> None:
    dataset = make_synthetic_dataset(22, dim=2, num_cases=1, num_test_cases=0, shape=(40, 56), name="Kidney-Demo",
                                     raw_dir=tmp_path)
    assert dataset == tmp_path / "Dataset022_Kidney-Demo"
    assert read_array(dataset / "labelsTr" / "case_000.nii.gz").shape == (40, 56)
    assert list((dataset / "imagesTs").iterdir()) == []


def test_existing_id_is_refused_and_left_untouched(tmp_path: pathlib.Path) -> None:
    existing = tmp_path / "Dataset031_SomethingElse"
    existing.mkdir()
    (existing / "dataset.json").write_text("keep me")
    with pytest.raises(FileExistsError) as error:
        make_synthetic_dataset(31, dim=2, num_cases=1, raw_dir=tmp_path)
    assert "--overwrite" in str(error.value)
    assert "Dataset031_SomethingElse" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset031_SomethingElse"]
    assert (existing / "dataset.json").read_text() == "keep me"


def test_overwrite_replaces_only_that_id(tmp_path: pathlib.Path) -> None:
    (tmp_path / "Dataset032_Old").mkdir()
    (tmp_path / "Dataset033_Neighbour").mkdir()
    dataset = make_synthetic_dataset(32, dim=2, num_cases=1, num_test_cases=0, raw_dir=tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset032_Synth2D", "Dataset033_Neighbour"]
    assert dataset.stat().st_mode & 0o777 == (tmp_path / "Dataset033_Neighbour").stat().st_mode & 0o777
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 1
    # Overwriting a dataset of the same name works too.
    make_synthetic_dataset(32, dim=2, num_cases=2, num_test_cases=0, raw_dir=tmp_path, overwrite=True)
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2


def test_failure_midway_leaves_no_half_dataset(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    existing = tmp_path / "Dataset034_Previous"
    existing.mkdir()
    written = []

    def write_two_then_fail(array: np.ndarray, path: pathlib.Path, spacing: tuple[float, ...]) -> None:
        if len(written) == 2:
            raise OSError("disk full")
        written.append(path)

    monkeypatch.setattr(synthetic, "_write_image", write_two_then_fail)
    with pytest.raises(OSError, match="disk full"):
        make_synthetic_dataset(34, dim=2, num_cases=3, raw_dir=tmp_path, overwrite=True)
    # The old dataset survives (it is only removed once the new one is complete) and no staging folder is left.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Dataset034_Previous"]


def test_nnunet_raw_environment_variable(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(RuntimeError, match="nnUNet_raw") as error:
        make_synthetic_dataset(41, dim=2, num_cases=1)
    assert "export nnUNet_raw=" in str(error.value)
    with pytest.raises(RuntimeError, match="nnUNet_raw"):
        find_dataset_folder(41)

    raw = tmp_path / "not_yet_created"
    monkeypatch.setenv("nnUNet_raw", str(raw))
    dataset = make_synthetic_dataset(41, dim=2, num_cases=1, num_test_cases=0)
    assert dataset == raw / "Dataset041_Synth2D"
    assert find_dataset_folder(41) == dataset


def test_find_dataset_folder(tmp_path: pathlib.Path) -> None:
    assert find_dataset_folder(51, raw_dir=tmp_path / "missing") is None
    assert find_dataset_folder(51, raw_dir=tmp_path) is None
    (tmp_path / "Dataset510_NotThisOne").mkdir()
    (tmp_path / "Dataset051_First").mkdir()
    assert find_dataset_folder(51, raw_dir=tmp_path) == tmp_path / "Dataset051_First"
    (tmp_path / "Dataset051_Second").mkdir()
    with pytest.raises(RuntimeError, match="Dataset051_First.*Dataset051_Second"):
        find_dataset_folder(51, raw_dir=tmp_path)


@pytest.mark.parametrize("arguments", [
    dict(dataset_id=0), dict(dataset_id=1000), dict(dataset_id="5"), dict(dataset_id=True),
    dict(dim=1), dict(dim=4), dict(dim=3.0), dict(num_cases=0), dict(num_test_cases=-1), dict(seed=-1),
    dict(channels=0), dict(channels=synthetic.MAX_CHANNELS + 1),
    dict(shape=(32, 32)), dict(shape=(8, 64, 64)), dict(name="bad name"), dict(name=""),
])
def test_invalid_arguments_are_refused(tmp_path: pathlib.Path, arguments: dict) -> None:
    arguments = {"dataset_id": 61, **arguments}
    with pytest.raises(ValueError):
        make_synthetic_dataset(arguments.pop("dataset_id"), raw_dir=tmp_path, **arguments)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dataset", ["dataset_3d", "dataset_2d", "dataset_multichannel_regions"], indirect=True)
def test_nnunet_verify_dataset_integrity_passes(dataset: pathlib.Path) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), num_processes=1)
