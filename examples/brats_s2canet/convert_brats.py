"""BraTS 2021 -> nnU-Net raw dataset (regions whole tumour / tumour core / enhancing tumour).

nnU-Net ships the conversion (``nnunetv2.dataset_conversion.Dataset137_BraTS21``) but its ``__main__`` has a fixed
path, so this wrapper calls its label conversion and writes the same dataset.json. Case folders with a
``*_seg.nii.gz`` go to imagesTr/labelsTr; case folders without one (the challenge's validation data) go to
imagesTs, the images a submission is predicted for.

    python convert_brats.py BRATS_DIR [-d 137]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from nnunetv2.dataset_conversion.Dataset137_BraTS21 import copy_BraTS_segmentation_and_convert_labels_to_nnUNet
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.paths import nnUNet_raw

SEQUENCES = ("t1", "t1ce", "t2", "flair")  # channel order of nnU-Net's Dataset137


def convert(brats_dir: Path, dataset_id: int) -> Path:
    case_dirs = sorted(p.parent for p in brats_dir.rglob("BraTS*_flair.nii.gz"))
    if not case_dirs:
        raise SystemExit(f"No BraTS case folders (BraTS2021_XXXXX/*_flair.nii.gz) under {brats_dir}")
    out = Path(nnUNet_raw, f"Dataset{dataset_id:03d}_BraTS2021")
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    num_training = 0
    for case_dir in case_dirs:
        case = case_dir.name
        segmentation = case_dir / f"{case}_seg.nii.gz"
        images = out / ("imagesTr" if segmentation.is_file() else "imagesTs")
        for channel, sequence in enumerate(SEQUENCES):
            shutil.copy(case_dir / f"{case}_{sequence}.nii.gz", images / f"{case}_{channel:04d}.nii.gz")
        if segmentation.is_file():
            copy_BraTS_segmentation_and_convert_labels_to_nnUNet(str(segmentation), str(out / "labelsTr" / f"{case}.nii.gz"))
            num_training += 1
    generate_dataset_json(str(out), channel_names={0: "T1", 1: "T1ce", 2: "T2", 3: "Flair"},
                          labels={"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3),
                                  "enhancing tumor": (3,)},
                          num_training_cases=num_training, file_ending=".nii.gz", regions_class_order=(1, 2, 3),
                          license="see https://www.synapse.org/#!Synapse:syn25829067/wiki/610863",
                          reference="see https://www.synapse.org/#!Synapse:syn25829067/wiki/610863",
                          dataset_release="1.0")
    print(f"Wrote {out}: {num_training} training cases, {len(case_dirs) - num_training} test cases")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("brats_dir", type=Path, help="the unpacked BraTS 2021 data (training and/or validation)")
    parser.add_argument("-d", dest="dataset_id", type=int, default=137)
    args = parser.parse_args()
    convert(args.brats_dir, args.dataset_id)
