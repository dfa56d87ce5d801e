"""RCC detection: DICOM or images -> kidney and tumour segmentation, per-side verdict.

Segments each case (a DICOM series folder, a folder of such folders, or nnU-Net images) with a trained nnU-Net model
(a kidney model first, if given, then the tumour model on the kidney's crop), decides per side, and writes
OUT/<case>/report.json, the segmentation, key-slice PNGs with bounding boxes, and OUT/summary.csv. Every case is
checked before the first prediction; a rerun adds the cases not done.
"""
from __future__ import annotations

import argparse
from pathlib import Path


EXIT_STATUSES = (0, 1, 2, 143)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model (-d/-c/-tr as for nnUNetv2_predict, or -m MODEL_FOLDER)")
    parser.add_argument("-i", dest="input", required=True,
                        help="a DICOM series folder, a folder of such folders (one case each), a folder of images "
                             "in nnU-Net's naming (CASE_0000.nii.gz), or one such image")
    parser.add_argument("-o", dest="output", required=True, help="output folder: OUT/<case>/ and OUT/summary.csv")
    model.add_argument("-d", dest="dataset", help="dataset id or name of the (tumour) model")
    model.add_argument("-c", dest="configuration", default="3d_fullres")
    model.add_argument("-tr", dest="trainer", default="nnUNetTrainer")
    model.add_argument("-p", dest="plans", default="nnUNetPlans")
    model.add_argument("-m", dest="model_folder", help="a trained model folder instead of -d/-c/-tr/-p")
    model.add_argument("-f", dest="folds", nargs="+", default=None,
                       help="folds to ensemble (default: every numbered fold with a checkpoint, else 'all')")
    model.add_argument("-chk", dest="checkpoint", default="checkpoint_final.pth")
    model.add_argument("--kidney-model", default=None,
                       help="two-stage setup: a trained kidney model folder; the main model then segments tumours "
                            "in a crop around the kidneys")
    model.add_argument("--kidney-folds", nargs="+", default=None, help="folds of --kidney-model (default: as for -f)")
    rules = parser.add_argument_group("decision")
    rules.add_argument("--kidney-label", type=int, default=1, help="kidney label value in the (kidney) model")
    rules.add_argument("--tumor-label", type=int, default=2, help="tumour label value in the (tumour) model")
    rules.add_argument("--kidney-min-ml", type=float, default=None,
                       help="a side has a kidney from this volume, its tumours included (default 20: the original's "
                            "1000 summed probabilities on its 2x2x5 mm grid)")
    rules.add_argument("--tumor-min-ml", type=float, default=None,
                       help="a lesion counts from this volume (default 1: the original's 50)")
    parser.add_argument("-device", dest="device", choices=("cpu", "cuda", "mps"), default=None,
                        help="default: cuda when torch sees a GPU, else cpu")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    parser.add_argument("--series-uid", default=None,
                        help="the Series Instance UID to read when a folder holds several (default: the largest)")
    parser.add_argument("--crop-margin-mm", type=float, default=20.0,
                        help="two-stage setup: margin around the kidneys for the tumour model")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="go on without DICOM files that cannot be read (each is named in a warning and the "
                             "report); by default they stop the run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of cases already in the output folder (default: keep and skip them)")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.detection.settings import DetectionSettings
    from nnunet_ext.detection.workflow import run_detection

    thresholds = {name: value for name, value in (("kidney_min_ml", args.kidney_min_ml),
                                                  ("tumor_min_ml", args.tumor_min_ml)) if value is not None}
    settings = DetectionSettings(
        model=_model_spec(args),
        kidney_model=_folder_spec(args.kidney_model, args.kidney_folds, args.checkpoint) if args.kidney_model else None,
        kidney_label=args.kidney_label, tumor_label=args.tumor_label, device=args.device or _default_device(),
        use_mirroring=not args.disable_tta, series_uid=args.series_uid, crop_margin_mm=args.crop_margin_mm,
        overwrite=args.overwrite, skip_unreadable=args.skip_unreadable, **thresholds)
    run_detection(args.input, args.output, settings)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_spec(args: argparse.Namespace):
    """The main model from -m, or from -d/-c/-tr/-p under $nnUNet_results."""
    from nnunet_ext.detection.models import resolve_model_folder

    if args.model_folder is not None:
        return _folder_spec(args.model_folder, args.folds, args.checkpoint)
    if args.dataset is None:
        raise ValueError("Name the model: -d DATASET [-c CONFIGURATION -tr TRAINER -p PLANS], or -m MODEL_FOLDER.")
    folder = resolve_model_folder(args.dataset, args.configuration, args.trainer, args.plans)
    return _folder_spec(str(folder), args.folds, args.checkpoint)


def _folder_spec(folder: str, folds: list[str] | None, checkpoint: str):
    from nnunet_ext.detection.models import ModelSpec, default_folds

    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"Model folder {path} does not exist.")
    chosen = tuple(folds) if folds else default_folds(path, checkpoint)
    return ModelSpec(folder=path, folds=chosen, checkpoint=checkpoint)
