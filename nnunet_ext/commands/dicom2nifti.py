"""Convert DICOM series (one folder per case) to NIfTI.

Reads each series with SimpleITK in slice order (duplicates, gaps, several series and unreadable files reported) and
writes OUT/<case>.nii.gz, or <case>_0000.nii.gz with --nnunet-names, ready as nnU-Net input. A file is written under
its final name only once complete.
"""
from __future__ import annotations

import argparse


EXIT_STATUSES = (0, 2, 143)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", dest="input", required=True,
                        help="a DICOM series folder, or a folder of such folders (one case each)")
    parser.add_argument("-o", dest="output", required=True, help="output folder for <case>.nii.gz")
    parser.add_argument("--series-uid", default=None,
                        help="the Series Instance UID to read when a folder holds several (default: the largest)")
    parser.add_argument("--nnunet-names", action="store_true",
                        help="name the files <case>_0000.nii.gz, ready as nnU-Net input")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="go on without DICOM files that cannot be read (each is named in a warning)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")


def command(args: argparse.Namespace) -> None:
    from nnunet_ext.dicom import dicom_to_nifti

    written = dicom_to_nifti(args.input, args.output, series_uid=args.series_uid, overwrite=args.overwrite,
                             nnunet_names=args.nnunet_names, skip_unreadable=args.skip_unreadable)
    print(f"Wrote {len(written)} file(s) to {args.output}")
