"""DICOM series -> image -> NIfTI: series by UID, slices by position, rescale to HU, geometry, and the warnings and
errors for bad series. The series are written by the tests with SimpleITK (tests/dicom_series.py)."""
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import run_command, scrubbed_environment
from dicom_series import INTERCEPT, SLOPE, hu_phantom, stored_pixels, write_series

from nnunet_ext.dicom import DicomError, dicom_to_nifti, find_dicom_cases, read_dicom_series

SIZE = (12, 10, 6)  # x, y, z
SPACING = (0.7, 0.9, 2.5)
# rows run to the patient's right, slices to the feet: a flipped series (a proper rotation, det +1)
FLIPPED = (-1, 0, 0, 0, 1, 0, 0, 0, -1)


def _assert_same_geometry(actual: sitk.Image, expected: sitk.Image) -> None:
    assert actual.GetSize() == expected.GetSize()
    assert np.allclose(actual.GetSpacing(), expected.GetSpacing(), atol=1e-4)
    assert np.allclose(actual.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    assert np.allclose(actual.GetDirection(), expected.GetDirection(), atol=1e-5)


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), FLIPPED], ids=["axial", "flipped"])
def test_series_reads_in_position_order_as_hu_with_its_geometry(tmp_path, direction):
    phantom = hu_phantom(SIZE, SPACING, direction)
    files = write_series(phantom, tmp_path / "series")

    volume = read_dicom_series(tmp_path / "series", log=lambda message: None)

    _assert_same_geometry(volume.image, phantom)
    assert np.array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(phantom))
    assert volume.modality == "CT" and volume.num_files == SIZE[2] and volume.warnings == []
    # the files hold scaled values, so equal HU above means the rescale was applied on reading
    first = sitk.GetArrayFromImage(phantom[:, :, 0]).ravel()
    assert np.array_equal(stored_pixels(files[0], first.size), (first - INTERCEPT) / SLOPE)


def test_nifti_round_trip_keeps_geometry_and_values(tmp_path):
    phantom = hu_phantom(SIZE, SPACING, FLIPPED)
    write_series(phantom, tmp_path / "dicom" / "patient 1")
    write_series(hu_phantom(SIZE, SPACING), tmp_path / "dicom" / "patient2", series_uid="1.2.3.970.2")

    written = dicom_to_nifti(tmp_path / "dicom", tmp_path / "nifti", nnunet_names=True, log=lambda message: None)

    assert [f.name for f in written] == ["patient_1_0000.nii.gz", "patient2_0000.nii.gz"]
    converted = sitk.ReadImage(str(written[0]))
    _assert_same_geometry(converted, phantom)
    assert np.array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(phantom))
    with pytest.raises(FileExistsError, match="--overwrite"):
        dicom_to_nifti(tmp_path / "dicom", tmp_path / "nifti", nnunet_names=True)


def test_several_series_take_the_named_or_the_largest(tmp_path):
    folder = tmp_path / "mixed"
    write_series(hu_phantom(SIZE, SPACING), folder / "a", series_uid="1.2.3.970.10")
    small = hu_phantom((12, 10, 3), SPACING, origin=(0.0, 0.0, 0.0))
    write_series(small, folder / "b", series_uid="1.2.3.970.11")
    for file in (folder / "b").iterdir():
        file.rename(folder / "a" / f"small_{file.name}")
    messages = []

    largest = read_dicom_series(folder / "a", log=messages.append)
    named = read_dicom_series(folder / "a", series_uid="1.2.3.970.11", log=messages.append)

    assert largest.series_uid == "1.2.3.970.10" and largest.image.GetSize() == SIZE
    assert "2 series" in messages[0] and "1.2.3.970.11 (3 files)" in messages[0] and "--series-uid" in messages[0]
    assert largest.warnings == ["2 series in the folder; read the largest, 1.2.3.970.10"]
    assert named.image.GetSize() == (12, 10, 3) and named.warnings == []
    with pytest.raises(DicomError, match="1.2.3.970.99 is not in"):
        read_dicom_series(folder / "a", series_uid="1.2.3.970.99")


def test_missing_and_duplicated_slices_are_reported_with_their_positions(tmp_path):
    phantom = hu_phantom((12, 10, 8), SPACING)  # slice k at z = 100 + 2.5 k
    write_series(phantom, tmp_path / "gap", skip=(4,))
    write_series(phantom, tmp_path / "twice", repeat=(2,))
    messages = []

    gap = read_dicom_series(tmp_path / "gap", log=messages.append)
    twice = read_dicom_series(tmp_path / "twice", log=messages.append)

    assert len(gap.warnings) == 1 and "missing slices" in gap.warnings[0]
    assert "107.50 -> 112.50" in gap.warnings[0] and "usual step is 2.50 mm" in gap.warnings[0]
    assert gap.image.GetSize()[2] == 7
    assert len(twice.warnings) == 1 and "1 duplicated slice(s) at position(s) 105.00" in twice.warnings[0]
    assert twice.image.GetSize() == phantom.GetSize()
    assert np.array_equal(sitk.GetArrayFromImage(twice.image), sitk.GetArrayFromImage(phantom))
    assert any(m.startswith("warning:") and "107.50" in m for m in messages)


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not an image")
    with pytest.raises(DicomError, match="No DICOM series in .*notes or its subfolders"):
        find_dicom_cases(tmp_path / "notes")
    with pytest.raises(DicomError, match="No DICOM series in"):
        read_dicom_series(tmp_path / "notes")


def test_dicom2nifti_command(tmp_path):
    phantom = hu_phantom(SIZE, SPACING)
    write_series(phantom, tmp_path / "case7")
    env = scrubbed_environment()
    run_command(["nnunet-ext", "dicom2nifti", "-i", str(tmp_path / "case7"), "-o", str(tmp_path / "out")], env)
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "case7.nii.gz"))),
                          sitk.GetArrayFromImage(phantom))

    refused = run_command(["nnunet-ext", "dicom2nifti", "-i", str(tmp_path / "case7"), "-o", str(tmp_path / "out")],
                          env, expect_success=False)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    empty = run_command(["nnunet-ext", "dicom2nifti", "-i", str(tmp_path / "out"), "-o", str(tmp_path / "x")], env,
                        expect_success=False)
    assert "No DICOM series" in empty.stderr and "Traceback" not in empty.stderr
