"""The output folder of the RCC detection workflow: ``OUT/<case>/`` and ``OUT/summary.csv``.

Each case is written to a hidden staging folder and moved in when complete (report.json last), so a crash never
leaves a case folder that looks finished; ``--overwrite`` replaces only these files, never other files in a case
folder.
"""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from nnunet_ext.detection.cases import DetectionCase
from nnunet_ext.detection.decision import SIDES

__all__ = ["SEGMENTATION_FILE", "REPORT_FILE", "SUMMARY_FILE", "cases_to_run", "staged_case_folder", "publish_case"]

SEGMENTATION_FILE = "segmentation.nii.gz"
REPORT_FILE = "report.json"
SUMMARY_FILE = "summary.csv"


def cases_to_run(output_dir: Path, cases: list[DetectionCase], overwrite: bool,
                 log: Callable[[str], None]) -> list[DetectionCase]:
    """The cases to predict: without ``overwrite`` those with results (a report.json) are kept and skipped."""
    for case in cases:
        folder = output_dir / case.name
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{folder} is a file, where detect writes case {case.name}'s folder. Move it, or "
                                  "choose another output folder.")
    done = [case for case in cases if (output_dir / case.name / REPORT_FILE).is_file()]
    if not done or overwrite:
        return cases
    log(f"{len(done)} of {len(cases)} case(s) already have results in {output_dir}, kept and skipped: "
        f"{', '.join(c.name for c in done[:5])}{' ...' if len(done) > 5 else ''}. Pass --overwrite to replace them.")
    return [case for case in cases if case not in done]


@contextmanager
def staged_case_folder(output_dir: Path, case: str) -> Iterator[Path]:
    """A new hidden folder in ``output_dir`` to write ``case``'s files into; removed on exit, published or not."""
    staging = output_dir / f".{case}.incomplete-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_case(staging: Path, target: Path) -> None:
    """Move the complete staging folder's files into ``target``, replacing only what detect writes there: other
    files of the folder stay. report.json goes first and comes back last, so a folder without it is unfinished."""
    if not target.exists():
        os.replace(staging, target)
        return
    if (target / REPORT_FILE).exists():
        os.remove(target / REPORT_FILE)
    new = {file.name for file in staging.iterdir()}
    for old in target.iterdir():
        if old.name not in new and old.is_file() and _written_by_detect(old.name, target.name):
            os.remove(old)  # a picture of a side that has no lesion now
    for name in sorted(new - {REPORT_FILE}) + [REPORT_FILE]:
        os.replace(staging / name, target / name)


def _written_by_detect(name: str, case: str) -> bool:
    return name in (SEGMENTATION_FILE, REPORT_FILE) or name in (f"{case}_{side}.png" for side in SIDES)
