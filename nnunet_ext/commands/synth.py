"""Write a synthetic nnU-Net raw dataset (organs with tumours) to $nnUNet_raw.

Organ-like blobs with tumour-like inclusions, 2D or 3D, one channel (CT-like) or several (MRI-like), labels or
regions, in nnU-Net v2's raw format: $nnUNet_raw/DatasetXXX_Synth*/ with imagesTr, labelsTr, imagesTs, labelsTs and
dataset.json. Prints the planning command to run next.
"""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_id", type=int, help="dataset id, 1..999")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3, help="spatial dimensions of the images")
    parser.add_argument("--cases", type=int, default=10, help="training cases (>= 5 for 5-fold cross-validation)")
    parser.add_argument("--test-cases", type=int, default=2, help="held-out cases in imagesTs/labelsTs")
    parser.add_argument("--channels", type=int, default=1, help="1 = CT-like, more = MRI-like sequences")
    parser.add_argument("--regions", action="store_true", help="region labels (organ incl. tumour, tumour)")
    parser.add_argument("--shape", type=int, nargs="+", default=None,
                        help="image size, z y x for 3D or y x for 2D, >= 16 per axis (default 32 64 64 / 96 96)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset with this id")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.synthetic import make_synthetic_dataset

    folder = make_synthetic_dataset(args.dataset_id, dim=args.dim, num_cases=args.cases,
                                    num_test_cases=args.test_cases, channels=args.channels, regions=args.regions,
                                    overwrite=args.overwrite, seed=args.seed,
                                    shape=tuple(args.shape) if args.shape else None)
    # after --overwrite an old fingerprint in nnUNet_preprocessed would be reused without --clean
    print(f"Wrote {folder}\nNext: nnUNetv2_plan_and_preprocess -d {args.dataset_id} "
          f"-c {'3d_fullres' if args.dim == 3 else '2d'}{' --clean' if args.overwrite else ''}")
    if args.cases < 5:
        print(f"Note: {args.cases} training cases allow only fold 'all'; 5-fold cross-validation needs 5 or more.")
