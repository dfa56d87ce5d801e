"""DICOM series -> image -> NIfTI: series by UID, slices by position, rescale to HU, geometry, and the warnings and
errors for bad series. The series are written by the tests with SimpleITK (tests/dicom_series.py)."""
import locale
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from helpers import run_command, scrubbed_environment
from dicom_series import INTERCEPT, SLOPE, hu_phantom, stored_pixels, write_series

from nnunet_ext.detection.cases import collect_cases, load_case
from nnunet_ext.dicom import (DicomError, OutputFolderError, _quiet_itk, dicom_to_nifti, find_dicom_cases,
                              read_dicom_series)

SIZE = (12, 10, 6)  # x, y, z
SPACING = (0.7, 0.9, 2.5)
# rows run to the patient's right, slices to the feet: a flipped series (a proper rotation, det +1)
FLIPPED = (-1, 0, 0, 0, 1, 0, 0, 0, -1)
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # SOP Class UID of Enhanced CT Image Storage (multi-frame)


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


def _quiet(message: str) -> None:
    pass


def test_case_names_that_collide_stop_the_run_before_anything_is_written(tmp_path):
    for name in ("Müller", "Möller"):
        write_series(hu_phantom(SIZE, SPACING), tmp_path / "umlauts" / name)
    with pytest.raises(DicomError, match="Möller, Müller -> M_ller.*Rename the folders"):
        dicom_to_nifti(tmp_path / "umlauts", tmp_path / "out", log=_quiet)
    for name in ("Case", "case"):  # one file on a file system that ignores case
        write_series(hu_phantom(SIZE, SPACING), tmp_path / "cases" / name)
    with pytest.raises(DicomError, match="Case, case -> Case"):
        dicom_to_nifti(tmp_path / "cases", tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_an_unreadable_slice_is_named_and_left_out_only_when_asked(tmp_path, position):
    phantom = hu_phantom(SIZE, SPACING)
    files = write_series(phantom, tmp_path / "series")  # files[k] holds slice k
    broken = files[{"first": 0, "middle": 3, "last": SIZE[2] - 1}[position]]
    broken.write_bytes(broken.read_bytes()[:-50])  # truncated in its pixel data: GDCM leaves it out silently

    with pytest.raises(DicomError, match=f"cannot be read as DICOM.*{broken.name}.*--skip-unreadable"):
        read_dicom_series(tmp_path / "series", log=_quiet)
    with pytest.raises(DicomError, match=broken.name):
        dicom_to_nifti(tmp_path / "series", tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()

    messages = []
    volume = read_dicom_series(tmp_path / "series", log=messages.append, skip_unreadable=True)
    assert volume.num_files == SIZE[2] - 1 and volume.image.GetSize()[2] == SIZE[2] - 1
    assert volume.warnings[0] == f"skipped unreadable file {broken.name} (truncated or corrupt)"
    assert any(broken.name in m and m.startswith("warning:") for m in messages)


def test_a_stray_dicom_file_beside_case_folders_is_refused_naming_both(tmp_path):
    files = write_series(hu_phantom(SIZE, SPACING), tmp_path / "batch" / "p1")
    write_series(hu_phantom(SIZE, SPACING), tmp_path / "batch" / "p2", series_uid="1.2.3.970.3")
    (tmp_path / "batch" / "stray.dcm").write_bytes(files[2].read_bytes())
    with pytest.raises(DicomError, match=r"holds DICOM file\(s\) of its own \(stray.dcm\).*\(p1, p2\)"):
        dicom_to_nifti(tmp_path / "batch", tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()


def test_a_tie_for_the_largest_series_asks_for_its_uid(tmp_path):
    folder = tmp_path / "tie"
    write_series(hu_phantom(SIZE, SPACING), folder, series_uid="1.2.3.970.20")
    for file in write_series(hu_phantom(SIZE, SPACING), tmp_path / "other", series_uid="1.2.3.970.21"):
        file.rename(folder / f"other_{file.name}")
    with pytest.raises(DicomError, match=r"tie for the largest with 6 files.*1.2.3.970.20.*1.2.3.970.21.*--series-uid"):
        read_dicom_series(folder, log=_quiet)
    assert read_dicom_series(folder, series_uid="1.2.3.970.21", log=_quiet).series_uid == "1.2.3.970.21"


def test_an_empty_series_uid_is_named_as_such(tmp_path):
    folder = tmp_path / "no_uid"
    write_series(hu_phantom(SIZE, SPACING), folder, series_uid="")
    for file in write_series(hu_phantom((12, 10, 3), SPACING), tmp_path / "small", series_uid="1.2.3.970.22"):
        file.rename(folder / f"small_{file.name}")
    messages = []
    volume = read_dicom_series(folder, log=messages.append)
    assert "using the largest, (no Series Instance UID) (6 files)" in messages[0]
    assert volume.image.GetSize() == SIZE


def test_a_slice_of_another_size_is_named_with_its_rows_and_columns(tmp_path):
    files = write_series(hu_phantom(SIZE, SPACING), tmp_path / "series")
    odd = write_series(hu_phantom((8, 10, 6), SPACING), tmp_path / "narrow")[2]
    odd.replace(files[2])
    with pytest.raises(DicomError, match=rf"another size.*{files[2].name} \(10 x 8\).*5 slices have 10 x 12"):
        read_dicom_series(tmp_path / "series", log=_quiet)


def test_an_output_folder_that_cannot_be_written_is_refused_before_reading(tmp_path):
    write_series(hu_phantom(SIZE, SPACING), tmp_path / "case1")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(OutputFolderError, match="Cannot write to the output folder .*a_file/out.*-o"):
        dicom_to_nifti(tmp_path / "case1", tmp_path / "a_file" / "out", log=_quiet)


INTERRUPTED_CONVERSION = """
import os, signal, sys
import SimpleITK as sitk
from nnunet_ext import dicom

write, written = sitk.WriteImage, []
def write_then_stop(image, path, *args, **kwargs):  # the real writer, then the signal while the file is partial
    write(image, path, *args, **kwargs)
    written.append(path)
    print(path, flush=True)
    if len(written) == 2:
        os.kill(os.getpid(), getattr(signal, sys.argv[3]))
sitk.WriteImage = write_then_stop
dicom.dicom_to_nifti(sys.argv[1], sys.argv[2], nnunet_names=True, log=lambda message: None)
"""


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_an_interrupted_conversion_leaves_no_partial_file(tmp_path, stop):
    for name in ("a", "b"):
        write_series(hu_phantom(SIZE, SPACING), tmp_path / "dicom" / name)
    output = tmp_path / "nifti"
    result = subprocess.run([sys.executable, "-c", INTERRUPTED_CONVERSION, str(tmp_path / "dicom"), str(output),
                             stop], capture_output=True, text=True, env=scrubbed_environment())
    assert result.returncode == {"SIGINT": -signal.SIGINT, "SIGTERM": 128 + signal.SIGTERM}[stop], result.stderr
    partial = [Path(line) for line in result.stdout.split()]
    # written under its own name in a hidden folder that neither an image reader nor nnU-Net's listing takes
    assert [p.name for p in partial] == ["a_0000.nii.gz", "b_0000.nii.gz"]
    assert all(p.parent.parent == output and p.parent.name.startswith(".") and p.parent.name.endswith(".partial")
               for p in partial)
    assert sorted(p.name for p in output.iterdir()) == ["a_0000.nii.gz"]  # b's partial file is gone
    assert sitk.ReadImage(str(output / "a_0000.nii.gz")).GetSize() == SIZE
    assert (output / "a_0000.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # NIfTI, gzip-compressed, as its name says


def test_a_slice_of_another_orientation_is_named(tmp_path):
    files = write_series(hu_phantom(SIZE, SPACING), tmp_path / "series", orientations={2: (0, 1, 0, 0, 0, -1)})
    with pytest.raises(DicomError, match=rf"another orientation.*{files[2].name} \(0\\1\\0\\0\\0\\-1\).*other 5 "
                                         r"slices have Image Orientation \(Patient\) 1\\0\\0\\0\\1\\0.*move the odd"):
        dicom_to_nifti(tmp_path / "series", tmp_path / "out", log=_quiet)
    assert not (tmp_path / "out").exists()


def _ball_on_tilted_slices(direction: tuple[float, ...], shift_mm: float,
                           radius: float) -> tuple[sitk.Image, np.ndarray]:
    """A ball (HU 1000 in -1000) sampled on slices that move ``shift_mm`` along the columns per slice, as a gantry
    tilt does, and its centre; the image's own geometry is that of the untilted stack, write_series adds the tilt."""
    size, spacing, origin = (24, 24, 16), (1.0, 1.0, 2.0), (-12.0, -12.0, 0.0)
    axes = np.array(direction).reshape(3, 3)
    centre = np.array(origin) + axes @ [12.0, 14.0, 15.0]  # inside every slice's field of view
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    stacked = np.stack([i.ravel() * spacing[0], j.ravel() * spacing[1], k.ravel() * spacing[2]])
    points = np.array(origin)[:, None] + axes @ stacked + axes[:, 1:2] * shift_mm * k.ravel()
    inside = (np.linalg.norm(points - centre[:, None], axis=0) <= radius).reshape(k.shape)
    image = sitk.GetImageFromArray(np.where(inside, 1000, -1000).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image, centre


@pytest.mark.parametrize("storage", ["series", "enhanced"])
@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), FLIPPED], ids=["axial", "flipped"])
def test_a_gantry_tilt_is_resampled_onto_an_orthogonal_grid_with_a_warning(tmp_path, direction, storage):
    radius, shift_mm = 6.0, 0.8
    tilted, centre = _ball_on_tilted_slices(direction, shift_mm, radius)
    if storage == "series":
        write_series(tilted, tmp_path / "tilted", tilt_shift_mm=shift_mm)
    else:  # GDCM places the frames by the first one and the spacing; only the per-frame positions show the tilt
        _enhanced_ct(tilted, tmp_path / "tilted" / "CT.dcm", reverse_frames=False)
        dataset = pydicom.dcmread(tmp_path / "tilted" / "CT.dcm")
        column = np.array(direction).reshape(3, 3)[:, 1]
        for k, frame in enumerate(dataset.PerFrameFunctionalGroupsSequence):
            plane = frame.PlanePositionSequence[0]
            plane.ImagePositionPatient = [f"{v:.6f}" for v in np.array(plane.ImagePositionPatient, float)
                                          + k * shift_mm * column]
        dataset.save_as(tmp_path / "tilted" / "CT.dcm")
    messages = []

    image = read_dicom_series(tmp_path / "tilted", log=messages.append).image

    # the ball comes out round and where it is: compared voxel by voxel with the ball drawn on the output grid
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 2.0))
    assert np.allclose(image.GetDirection(), direction)
    indices = np.stack(np.meshgrid(*(np.arange(n) for n in image.GetSize()), indexing="ij"), -1).reshape(-1, 3)
    points = np.array(image.GetOrigin()) + indices * image.GetSpacing() @ np.array(direction).reshape(3, 3).T
    expected = (np.linalg.norm(points - centre, axis=1) <= radius).reshape(image.GetSize()).transpose(2, 1, 0)
    found = sitk.GetArrayFromImage(image) > 0
    assert 2 * (expected & found).sum() / (expected.sum() + found.sum()) > 0.95
    assert np.allclose([points[found.transpose(2, 1, 0).ravel()].mean(axis=0)], centre, atol=0.3)
    assert len(messages) == 1 and "gantry tilt of 21.8 degrees" in messages[0] and "0.80 mm sideways" in messages[0]
    assert "(24, 24, 16) -> (24, 36, 16)" in messages[0]


def test_itk_warnings_pass_except_the_known_harmless_ones(tmp_path, capfd):
    write_series(hu_phantom((12, 10, 8), SPACING), tmp_path / "gap", skip=(4,))
    (tmp_path / "empty").mkdir()
    find_dicom_cases(tmp_path)  # scans tmp_path and the empty folder: ITK prints "No Series were found"
    read_dicom_series(tmp_path / "gap", log=_quiet)  # ITK's "Non uniform sampling" repeats our own warning
    assert capfd.readouterr().err == ""
    sheared = sitk.Image(4, 4, 4, sitk.sitkInt16)
    sheared.SetDirection((1, 0, 0, 0.2, 1, 0, 0, 0, 1))
    with _quiet_itk():
        sitk.WriteImage(sheared, str(tmp_path / "sheared.nii.gz"))
    assert "Non-orthogonal direction matrix coerced to orthogonal" in capfd.readouterr().err


def _enhanced_ct(phantom: sitk.Image, file: Path, reverse_frames: bool) -> None:
    """One Enhanced CT file (multi-frame, per-frame functional groups written by GDCM); ``reverse_frames`` stores
    the frames (pixels and functional groups) from the last position to the first."""
    saved_locale = locale.setlocale(locale.LC_ALL)
    image = sitk.Image(phantom)
    for tag, value in {"0008|0016": ENHANCED_CT, "0008|0060": "CT", "0020|000e": "1.2.3.970.30"}.items():
        image.SetMetaData(tag, value)
    file.parent.mkdir(parents=True)
    try:
        sitk.WriteImage(image, str(file))
    finally:
        locale.setlocale(locale.LC_ALL, saved_locale)
    if reverse_frames:
        dataset = pydicom.dcmread(file)
        frames = list(dataset.PerFrameFunctionalGroupsSequence)
        dataset.PerFrameFunctionalGroupsSequence = pydicom.Sequence(frames[::-1])
        dataset.PixelData = np.ascontiguousarray(dataset.pixel_array[::-1]).tobytes()
        dataset.save_as(file)


@pytest.mark.parametrize("reverse_frames", [False, True], ids=["stored_in_order", "stored_reversed"])
def test_enhanced_ct_in_one_file_reads_as_a_volume_in_position_order(tmp_path, reverse_frames):
    phantom = hu_phantom(SIZE, SPACING, FLIPPED)
    _enhanced_ct(phantom, tmp_path / "enhanced" / "CT.dcm", reverse_frames)

    volume = read_dicom_series(tmp_path / "enhanced", log=_quiet)

    _assert_same_geometry(volume.image, phantom)
    assert np.array_equal(sitk.GetArrayFromImage(volume.image), sitk.GetArrayFromImage(phantom))
    assert volume.num_files == 1 and volume.warnings == []


def test_detect_takes_an_enhanced_ct_file_as_a_3d_case(tmp_path):
    phantom = hu_phantom(SIZE, SPACING)
    _enhanced_ct(phantom, tmp_path / "enhanced" / "CT.dcm", reverse_frames=False)

    [case] = collect_cases(tmp_path / "enhanced", num_channels=1, file_ending=".nii.gz")
    [image], info = load_case(case, log=_quiet)

    _assert_same_geometry(image, phantom)
    assert info["kind"] == "dicom" and info["files"] == 1


def test_a_multi_frame_file_whose_frames_have_no_positions_is_refused_with_what_to_do(tmp_path):
    file = tmp_path / "frames" / "CT.dcm"
    _enhanced_ct(hu_phantom(SIZE, SPACING), file, reverse_frames=False)
    dataset = pydicom.dcmread(file)
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        del frame.PlanePositionSequence
    dataset.save_as(file)
    with pytest.raises(DicomError, match=rf"CT.dcm is a multi-frame DICOM file \(6 frames, SOP class {ENHANCED_CT}\)"
                                         r".*Plane Position and Orientation.*dcm2niix"):
        dicom_to_nifti(tmp_path / "frames", tmp_path / "out", log=_quiet)
