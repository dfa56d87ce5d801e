"""Declare MSD Task03 Liver's labels (1 liver, 2 cancer) as nnU-Net regions: liver = {1, 2}, tumour = {2}.

nnU-Net's MSD converter keeps plain labels; REC-UNet's liver-contains-tumour hierarchy is a region training,
which needs only a different dataset.json (the label files stay as they are).

    python liver_regions.py DATASET_ID
"""
from __future__ import annotations

import argparse
import json

from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.paths import nnUNet_raw

MSD_LABELS = {"background": 0, "liver": 1, "cancer": 2}
REGION_LABELS = {"background": 0, "liver": [1, 2], "tumour": [2]}


def declare_regions(dataset_id: int) -> None:
    path = f"{nnUNet_raw}/{maybe_convert_to_dataset_name(dataset_id)}/dataset.json"
    with open(path) as file:
        dataset = json.load(file)
    if dataset["labels"] not in (MSD_LABELS, REGION_LABELS):
        raise SystemExit(f"{path}: expected MSD Liver's labels {MSD_LABELS}, found {dataset['labels']}")
    dataset["labels"] = REGION_LABELS
    dataset["regions_class_order"] = [1, 2]
    with open(path, "w") as file:
        json.dump(dataset, file, indent=4)
    print(f"{path}: labels are now regions {REGION_LABELS}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset_id", type=int)
    declare_regions(parser.parse_args().dataset_id)
