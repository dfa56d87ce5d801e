"""RCC detection: the per-side decision on hand-made label maps with known answers (sides follow the direction
matrix, not array columns), the key-slice picture, and ``nnunet-ext detect`` end to end with a tiny model trained
by nnU-Net's own commands, on a DICOM series and on nnU-Net-named images, plus its refusals of bad input."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from helpers import run_command
from dicom_series import write_series

from nnunet_ext import cli
from nnunet_ext.detection.decision import KIDNEY_MIN_ML, TUMOR_MIN_ML, decide_sides, midline_x_mm
from nnunet_ext.detection.pictures import picture_size, render_side_picture

# ---------------------------------------------------------------------------------------------- hand-made cases
# A 40 x 20 x 10 grid (x, y, z) of 1 x 1 x 2 mm voxels (0.002 mL); with the identity direction and origin x = -20,
# column c lies at patient x = c - 20 mm and the field of view's centre at x = -0.5 mm.
SPACING = (1.0, 1.0, 2.0)
VOXEL_ML = 0.002
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FLIP_X_AND_Z = (-1, 0, 0, 0, 1, 0, 0, 0, -1)  # a proper rotation: columns and slices run the other way


def _label_map() -> np.ndarray:
    labels = np.zeros((10, 20, 40), dtype=np.uint8)  # (z, y, x)
    labels[2:8, 5:15, 3:13] = 1    # kidney in low columns: 600 voxels
    labels[3:6, 7:11, 5:9] = 2     # a tumour inside it: 3 x 4 x 4 = 48 voxels, 0.096 mL
    labels[2:8, 5:15, 27:37] = 1   # kidney in high columns: 600 voxels
    labels[4:6, 9:11, 35:37] = 2   # a small tumour at its edge: 8 voxels, 0.016 mL
    labels[2:4, 0:2, 38:40] = 2    # a tumour touching no kidney: 8 voxels
    return labels


def _image(array: np.ndarray, direction=IDENTITY, origin=(-20.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    return image


def _ct(labels: np.ndarray) -> np.ndarray:
    ct = np.full(labels.shape, -1000, dtype=np.int16)
    ct[:, 1:19, 1:39] = 20                     # body
    ct[labels == 1], ct[labels == 2] = 160, 70  # enhancing kidneys, darker tumours
    return ct


def test_defaults_are_the_originals_thresholds_on_its_grid():
    # 1000 and 50 summed probabilities at 2 x 2 x 5 mm = 0.02 mL per voxel
    assert KIDNEY_MIN_ML == pytest.approx(20.0) and TUMOR_MIN_ML == pytest.approx(1.0)


def test_per_side_decision_with_known_answers():
    labels = _label_map()
    probability = np.where(labels == 2, 0.8, 0.1).astype(np.float32)
    probability[3, 7, 5] = 0.2  # one voxel of the counted tumour: its mean is (47 * 0.8 + 0.2) / 48

    sides, lesions = decide_sides(labels, _image(labels), kidney_min_ml=1.0, tumor_min_ml=0.05,
                                  tumor_probability=probability)

    right, left = sides["right"], sides["left"]  # low columns = low x = the patient's right (LPS)
    assert right.verdict == "RCC-suspected lesion" and right.kidney_present
    assert right.kidney_ml == pytest.approx(600 * VOXEL_ML)
    [tumor] = right.lesions
    assert tumor.counted and tumor.voxels == 48 and tumor.volume_ml == pytest.approx(48 * VOXEL_ML)
    assert tumor.centroid_voxel == [6.5, 8.5, 4.0]
    assert tumor.centroid_mm == [-13.5, 8.5, 8.0]
    assert tumor.bbox_voxel == {"min": [5, 7, 3], "max": [8, 10, 5]}
    assert tumor.bbox_mm == {"min": [-15.0, 7.0, 6.0], "max": [-12.0, 10.0, 10.0]}
    assert tumor.mean_probability == pytest.approx((47 * 0.8 + 0.2) / 48, abs=1e-4)

    assert left.verdict == "no lesion" and left.kidney_ml == pytest.approx(600 * VOXEL_ML)
    assert [(lesion.voxels, lesion.touches_kidney, lesion.counted, lesion.reason) for lesion in left.lesions] == [
        (8, False, False, "outside the kidney"), (8, True, False, "below the tumour threshold")]
    assert lesions.max() == 3 and (lesions > 0).sum() == 64

    json.dumps([vars(lesion) for side in sides.values() for lesion in side.lesions])  # plain types for report.json

    no_kidney, _ = decide_sides(labels, _image(labels), kidney_min_ml=1.25, tumor_min_ml=0.05)
    assert [no_kidney[s].verdict for s in ("right", "left")] == ["no kidney", "no kidney"]
    assert no_kidney["right"].lesions[0].reason == "no kidney on this side"


def test_sides_follow_the_direction_matrix_not_the_array_columns():
    labels = _label_map()
    # the same array with columns running to the patient's right: the tumour is now in the left kidney
    flipped, _ = decide_sides(labels, _image(labels, FLIP_X_AND_Z, origin=(20.0, 0.0, 18.0)), kidney_min_ml=1.0,
                              tumor_min_ml=0.05)
    assert flipped["left"].verdict == "RCC-suspected lesion" and flipped["right"].verdict == "no lesion"
    assert flipped["left"].lesions[0].centroid_mm == [13.5, 8.5, 10.0]

    # the same patient stored the other way round (array and direction flipped): the same answer as unflipped
    same_patient = labels[::-1, :, ::-1]
    again, _ = decide_sides(same_patient, _image(same_patient, FLIP_X_AND_Z, origin=(19.0, 0.0, 18.0)),
                            kidney_min_ml=1.0, tumor_min_ml=0.05)
    assert again["right"].verdict == "RCC-suspected lesion" and again["left"].verdict == "no lesion"
    assert again["right"].lesions[0].centroid_mm == [-13.5, 8.5, 8.0]


def test_midline_is_the_body_centre_on_ct():
    labels = _label_map()
    ct = np.full(labels.shape, -1000, dtype=np.int16)
    ct[:, :, 20:40] = 40  # the body fills the high columns only: its centre is column 29.5
    assert midline_x_mm(_image(labels), ct) == (pytest.approx(9.5), "body centre")
    assert midline_x_mm(_image(labels)) == (pytest.approx(-0.5), "field-of-view centre")


def _render(labels: np.ndarray, direction, origin, path: Path) -> dict:
    sides, lesions = decide_sides(labels, _image(labels, direction, origin), kidney_min_ml=1.0, tumor_min_ml=0.05)
    return render_side_picture(_image(_ct(labels), direction, origin), _image(labels, direction, origin),
                               _image(lesions.astype(np.int32), direction, origin),
                               [lesion.number for lesion in sides["right"].counted], path,
                               ["case: right kidney", "1 lesion(s), largest 0.10 mL"])


def _colour_columns(picture: np.ndarray, colour) -> np.ndarray:
    return np.nonzero(np.all(picture == colour, axis=-1))[1]


@pytest.mark.parametrize("stored", ["as is", "flipped"])
def test_picture_shows_the_largest_tumour_slice_in_radiological_view(tmp_path, stored):
    labels = _label_map()
    if stored == "as is":
        info = _render(labels, IDENTITY, (-20.0, 0.0, 0.0), tmp_path / "right.png")
    else:
        info = _render(labels[::-1, :, ::-1].copy(), FLIP_X_AND_Z, (19.0, 0.0, 18.0), tmp_path / "right.png")

    picture = Image.open(tmp_path / "right.png")
    # 40 x 20 pixels of 1 mm, scaled by ceil(512 / 20) = 26
    assert picture.format == "PNG" and picture.mode == "RGB" and picture.size == (1040, 520)
    assert picture_size((40, 20), (1.0, 1.0)) == (1040, 520) and info["size"] == [1040, 520]
    pixels = np.asarray(picture)
    red, green, yellow = (_colour_columns(pixels, c) for c in ((255, 40, 40), (0, 220, 0), (255, 220, 0)))
    # the patient's right is on the picture's left: the counted tumour's outline and its box lie in columns 5..8
    # (x 26); the tumour outside the kidney, in columns 38..39, is outlined too, but has no box
    assert set(red) == set(range(5 * 26, 9 * 26)) | set(range(38 * 26, 40 * 26))
    assert yellow.size and yellow.min() >= 5 * 26 - 10 and yellow.max() < 9 * 26 + 10
    assert green.min() < 520 < green.max()  # both kidneys outlined
    assert info["axial_z_mm"] in (6.0, 8.0, 10.0)  # one of the tumour's slices (equal areas: the first)
    expected_index = int(info["axial_z_mm"] / 2) if stored == "as is" else int((18 - info["axial_z_mm"]) / 2)
    assert info["input_slice_index"] == expected_index


# ---------------------------------------------------------------------------------------------- end to end
DATASET_ID = 970
TRAINER = "nnUNetTrainer_Smoke"
SHAPE = (16, 32, 32)
DETECT = ["-d", str(DATASET_ID), "-c", "3d_fullres", "-tr", TRAINER, "-device", "cpu", "--disable_tta"]
LOOSE = ["--kidney-min-ml", "0", "--tumor-min-ml", "0"]  # a 2-iteration model: let every component count


@pytest.fixture(scope="module")
def trained_model(nnunet_env) -> tuple[dict, Path]:
    """A 3D synthetic dataset (label 1 organ ~ kidney, 2 tumour), nnU-Net's default network trained for 2 iterations
    on fold 'all' with the stock commands."""
    from nnunet_ext.synthetic import make_synthetic_dataset

    dataset = make_synthetic_dataset(DATASET_ID, dim=3, num_cases=2, num_test_cases=2, shape=SHAPE,
                                     raw_dir=nnunet_env["nnUNet_raw"])
    run_command(["nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "1", "-npfp", "1"],
                nnunet_env)
    run_command(["nnUNetv2_train", str(DATASET_ID), "3d_fullres", "all", "-tr", TRAINER, "-device", "cpu"],
                {**nnunet_env, "nnUNet_n_proc_DA": "0"})
    return nnunet_env, dataset


@pytest.fixture(scope="module")
def detections(trained_model, tmp_path_factory) -> dict[str, Path]:
    """``nnunet-ext detect`` on a folder of DICOM series and on the nnU-Net-named test images."""
    env, dataset = trained_model
    root = tmp_path_factory.mktemp("detect")
    image = sitk.ReadImage(str(dataset / "imagesTs" / "case_002_0000.nii.gz"))
    write_series(image, root / "dicom" / "patient_a", slope=1.0, intercept=-1024.0)
    outputs = {"dicom": root / "out_dicom", "images": root / "out_images"}
    for kind, source in (("dicom", root / "dicom"), ("images", dataset / "imagesTs")):
        result = run_command(["nnunet-ext", "detect", "-i", str(source), "-o", str(outputs[kind]), *DETECT, *LOOSE],
                             env)
        assert "[1/" in result.stdout and "Wrote" in result.stdout  # progress across cases
    return outputs


def _reports(output: Path) -> dict[str, dict]:
    return {folder.name: json.loads((folder / "report.json").read_text())
            for folder in sorted(output.iterdir()) if folder.is_dir()}


def test_detect_writes_reports_segmentations_pictures_and_summary(trained_model, detections):
    _, dataset = trained_model
    reports = {**_reports(detections["images"]), **_reports(detections["dicom"])}
    assert sorted(reports) == ["case_002", "case_003", "patient_a"]
    assert not [p for out in detections.values() for p in out.iterdir() if p.name.startswith(".")]  # no staging

    for case, report in reports.items():
        output = detections["dicom" if case == "patient_a" else "images"]
        assert report["model"]["trainer"] == TRAINER and report["model"]["folds"] == ["all"]
        assert report["thresholds"]["kidney_min_ml"] == 0 and "1000" in report["thresholds"]["derivation"]
        assert {"nnunetv2", "torch", "SimpleITK"} <= set(report["versions"])
        source = dataset / "imagesTs" / f"{'case_002' if case == 'patient_a' else case}_0000.nii.gz"
        reference = sitk.ReadImage(str(source))
        segmentation = sitk.ReadImage(str(output / case / "segmentation.nii.gz"))
        assert segmentation.GetSize() == reference.GetSize()
        assert np.allclose(segmentation.GetSpacing(), reference.GetSpacing(), atol=1e-5)
        assert np.allclose(segmentation.GetOrigin(), reference.GetOrigin(), atol=1e-4)
        labels = sitk.GetArrayFromImage(segmentation)
        assert set(np.unique(labels)) <= {0, 1, 2}

        # the report is the decision on the written segmentation
        expected, _ = decide_sides(labels, segmentation, kidney_min_ml=0, tumor_min_ml=0,
                                   midline=report["midline"]["x_mm"])
        for side in ("right", "left"):
            written = report["sides"][side]
            assert written["verdict"] == expected[side].verdict
            assert written["kidney_ml"] == pytest.approx(expected[side].kidney_ml, abs=1e-3)
            assert [lesion["voxels"] for lesion in written["lesions"]] == [e.voxels for e in expected[side].lesions]
            assert all(0 <= lesion["mean_probability"] <= 1 for lesion in written["lesions"])
            picture = output / case / f"{case}_{side}.png"
            assert picture.exists() == (written["verdict"] == "RCC-suspected lesion")
            if picture.exists():
                with Image.open(picture) as png:  # 32 x 32 pixels of 0.8 mm, scaled by ceil(512 / 32) = 16
                    assert png.format == "PNG" and png.size == (512, 512)
                    assert len(np.unique(np.asarray(png).reshape(-1, 3), axis=0)) > 50  # a CT slice, not a blank

    for output in detections.values():
        with open(output / "summary.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [(r["case"], r["side"]) for r in rows] == [(c, s) for c in sorted(_reports(output))
                                                           for s in ("right", "left")]
        for row in rows:
            side = reports[row["case"]]["sides"][row["side"]]
            assert row["verdict"] == side["verdict"] and float(row["kidney_ml"]) == pytest.approx(side["kidney_ml"])
            assert (row["picture"] != "") == (side["picture"] is not None)


def test_dicom_series_and_its_nifti_get_the_same_segmentation(detections):
    from_dicom = sitk.GetArrayFromImage(sitk.ReadImage(str(detections["dicom"] / "patient_a" / "segmentation.nii.gz")))
    from_nifti = sitk.GetArrayFromImage(sitk.ReadImage(str(detections["images"] / "case_002" / "segmentation.nii.gz")))
    assert np.mean(from_dicom == from_nifti) > 0.99
    report = _reports(detections["dicom"])["patient_a"]
    assert report["input"]["kind"] == "dicom" and report["input"]["files"] == SHAPE[0]


def _detect(argv: list[str], env: dict, monkeypatch, capsys) -> tuple[int, str]:
    """The detect command in this process (the refusals come before any model is loaded)."""
    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    code = cli.main(["detect", *argv])
    return code, capsys.readouterr().err


def test_detect_refuses_bad_input_early(trained_model, detections, tmp_path, monkeypatch, capsys):
    env, dataset = trained_model
    images = str(dataset / "imagesTs")
    out = str(tmp_path / "out")

    code, error = _detect(["-i", images, "-o", out, *DETECT, "-f", "3"], env, monkeypatch, capsys)
    assert code == 2 and "Fold(s) 3" in error and "Folds with one: all" in error
    code, error = _detect(["-i", images, "-o", out, *DETECT, "--tumor-label", "5"], env, monkeypatch, capsys)
    assert code == 2 and "tumour label 5 is not among the labels" in error and "organ=1" in error
    code, error = _detect(["-i", images, "-o", out, *DETECT, "--kidney-label", "2"], env, monkeypatch, capsys)
    assert code == 2 and "both 2" in error

    flat = tmp_path / "flat"
    flat.mkdir()
    sitk.WriteImage(sitk.Image(32, 32, sitk.sitkInt16), str(flat / "slice_0000.nii.gz"))
    code, error = _detect(["-i", str(flat), "-o", out, *DETECT], env, monkeypatch, capsys)
    assert code == 2 and "2D image" in error

    (tmp_path / "notes").mkdir()
    code, error = _detect(["-i", str(tmp_path / "notes"), "-o", out, *DETECT], env, monkeypatch, capsys)
    assert code == 2 and "No DICOM series" in error
    assert not os.path.exists(out)  # nothing written by a refused run


def test_two_stage_kidney_model_then_tumour_model_on_a_crop(trained_model, detections, tmp_path, monkeypatch, capsys,
                                                            single_thread_torch):
    env, dataset = trained_model
    model = Path(env["nnUNet_results"]) / dataset.name / f"{TRAINER}__nnUNetPlans__3d_fullres"
    code, error = _detect(["-i", str(dataset / "imagesTs" / "case_002_0000.nii.gz"), "-o", str(tmp_path / "out"),
                           "-m", str(model), "--kidney-model", str(model), "--crop-margin-mm", "2", "-device", "cpu",
                           "--disable_tta", *LOOSE], env, monkeypatch, capsys)
    assert code == 0, error
    assert error.count("100%|") >= 2, error  # nnU-Net's sliding-window progress, for both models' predictions
    report = json.loads((tmp_path / "out" / "case_002" / "report.json").read_text())
    assert report["kidney_model"]["folder"] == str(model) and report["prediction"]["crop_margin_mm"] == 2

    two_stage = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case_002" / "segmentation.nii.gz")))
    one_model = sitk.GetArrayFromImage(sitk.ReadImage(str(detections["images"] / "case_002" / "segmentation.nii.gz")))
    kidney = one_model == 1  # the kidney model's output: the same model on the same image
    assert kidney.any()
    assert np.array_equal(two_stage == 1, kidney & (two_stage != 2))
    # tumours only in the kidneys' box plus 2 mm: 1 slice of 2.5 mm, 3 pixels of 0.8 mm
    found = np.argwhere(kidney)
    box = tuple(slice(max(lo - m, 0), hi + m + 1) for lo, hi, m in zip(found.min(0), found.max(0), (1, 3, 3)))
    outside = two_stage == 2
    outside[box] = False
    assert not outside.any()


def test_existing_results_are_kept_unless_overwrite_which_replaces_only_detects_files(
        trained_model, detections, monkeypatch, capsys, single_thread_torch):
    env, dataset = trained_model
    output = detections["images"]
    report = output / "case_002" / "report.json"
    before = report.read_text()
    (output / "case_002" / "my_notes.txt").write_text("the user's own file")

    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    assert cli.main(["detect", "-i", str(dataset / "imagesTs"), "-o", str(output), *DETECT, *LOOSE]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 case(s) already have results" in out and "--overwrite" in out and "[1/" not in out
    assert report.read_text() == before

    code, error = _detect(["-i", str(dataset / "imagesTs" / "case_002_0000.nii.gz"), "-o", str(output), *DETECT,
                           "--overwrite"], env, monkeypatch, capsys)
    assert code == 0, error
    rewritten = json.loads(report.read_text())
    assert rewritten["thresholds"]["kidney_min_ml"] == KIDNEY_MIN_ML  # the new run's defaults
    assert (output / "case_002" / "my_notes.txt").read_text() == "the user's own file"
    pictures = {side["picture"]["file"] for side in rewritten["sides"].values() if side["picture"]}
    assert {p.name for p in (output / "case_002").glob("*.png")} == pictures  # no picture of the old run left
    assert (output / "case_003" / "report.json").is_file()  # a case not in the new run stays, and in the summary
    with open(output / "summary.csv") as handle:
        assert [row["case"] for row in csv.DictReader(handle)] == ["case_002"] * 2 + ["case_003"] * 2
    assert not [p for p in output.iterdir() if p.name.startswith(".")]


def test_detect_refuses_bad_values_images_and_outputs_before_predicting(trained_model, tmp_path, monkeypatch,
                                                                         capsys):
    env, dataset = trained_model
    images = str(dataset / "imagesTs")
    out = tmp_path / "out"
    for option, value in (("--kidney-min-ml", "nan"), ("--tumor-min-ml", "inf"), ("--kidney-min-ml", "-1")):
        code, error = _detect(["-i", images, "-o", str(out), *DETECT, option, value], env, monkeypatch, capsys)
        assert code == 2 and f"{option} {float(value)}: give a finite number >= 0" in error

    four_d, vector, misnamed = (tmp_path / name for name in ("four_d", "vector", "misnamed"))
    for folder in (four_d, vector, misnamed):
        folder.mkdir()
    sitk.WriteImage(sitk.Image([16, 16, 8, 2], sitk.sitkInt16), str(four_d / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 8], sitk.sitkVectorInt16, 3), str(vector / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.Image([16, 16, 8], sitk.sitkInt16), str(misnamed / "scan.nii.gz"))
    expected = {four_d: "is a 4D image (size (16, 16, 8, 2)); detection needs a 3D volume: split it",
                vector: "has 3 components per voxel (a vector or RGB image)",
                misnamed: "(scan.nii.gz) are not in nnU-Net's naming: name them CASE_0000.nii.gz"}
    for folder, message in expected.items():
        code, error = _detect(["-i", str(folder), "-o", str(out), *DETECT], env, monkeypatch, capsys)
        assert code == 2 and message in error, error

    stray = tmp_path / "stray"
    files = write_series(sitk.ReadImage(str(dataset / "imagesTs" / "case_002_0000.nii.gz")), stray / "patient")
    (stray / "IM9999.dcm").write_bytes(files[0].read_bytes())
    code, error = _detect(["-i", str(stray), "-o", str(out), *DETECT], env, monkeypatch, capsys)
    assert code == 2 and "holds DICOM file(s) of its own (IM9999.dcm)" in error and "(patient)" in error
    assert not out.exists()

    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    assert cli.main(["detect", "-i", images, "-o", str(tmp_path / "a_file" / "out"), *DETECT]) == 2
    captured = capsys.readouterr()
    assert "Cannot write to the output folder" in captured.err and "reading" not in captured.out


def test_an_unreadable_slice_stops_a_batch_before_any_prediction(trained_model, tmp_path, monkeypatch, capsys,
                                                                 single_thread_torch):
    env, dataset = trained_model
    image = sitk.ReadImage(str(dataset / "imagesTs" / "case_002_0000.nii.gz"))
    write_series(image, tmp_path / "batch" / "patient_a", slope=1.0, intercept=-1024.0)
    broken = write_series(image, tmp_path / "batch" / "patient_b", slope=1.0, intercept=-1024.0)[0]
    broken.write_bytes(broken.read_bytes()[:-100])
    output = tmp_path / "out"

    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    assert cli.main(["detect", "-i", str(tmp_path / "batch"), "-o", str(output), *DETECT, *LOOSE]) == 2
    captured = capsys.readouterr()
    assert f"patient_b cannot be read as DICOM (truncated or corrupt): {broken.name}" in captured.err
    assert "--skip-unreadable" in captured.err and "[1/" not in captured.out and not output.exists()

    code, error = _detect(["-i", str(tmp_path / "batch" / "patient_b"), "-o", str(output), *DETECT, *LOOSE,
                           "--skip-unreadable"], env, monkeypatch, capsys)
    assert code == 0, error
    read = json.loads((output / "patient_b" / "report.json").read_text())["input"]
    assert read["files"] == SHAPE[0] - 1
    assert f"skipped unreadable file {broken.name} (truncated or corrupt)" in read["warnings"]


INTERRUPTED_DETECTION = """
import os, signal, sys
from nnunet_ext import cli
from nnunet_ext.detection import workflow

publish = workflow.publish_case
def publish_then_stop(staging, target):  # SIGTERM once the first case is complete
    publish(staging, target)
    os.kill(os.getpid(), signal.SIGTERM)
workflow.publish_case = publish_then_stop
sys.exit(cli.main(["detect", *sys.argv[1:]]))
"""


def test_an_interrupted_batch_keeps_its_cases_in_the_summary_and_a_rerun_adds_the_rest(
        trained_model, tmp_path, monkeypatch, capsys, single_thread_torch):
    env, dataset = trained_model
    output = tmp_path / "out"
    arguments = ["-i", str(dataset / "imagesTs"), "-o", str(output), *DETECT, *LOOSE]
    stopped = subprocess.run([sys.executable, "-c", INTERRUPTED_DETECTION, *arguments], env=env, capture_output=True,
                             text=True, timeout=600)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "1 case(s) not done: run the same command again to add them" in stopped.stdout
    assert sorted(p.name for p in output.iterdir()) == ["case_002", "summary.csv"]  # no staging folder left
    with open(output / "summary.csv") as handle:
        assert [row["case"] for row in csv.DictReader(handle)] == ["case_002"] * 2
    first = (output / "case_002" / "report.json").read_text()

    code, error = _detect(arguments, env, monkeypatch, capsys)  # no --overwrite needed to add the missing case
    assert code == 0, error
    assert (output / "case_002" / "report.json").read_text() == first
    with open(output / "summary.csv") as handle:
        assert [row["case"] for row in csv.DictReader(handle)] == ["case_002"] * 2 + ["case_003"] * 2
