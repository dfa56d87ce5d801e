"""The key-slice pictures of the RCC detection workflow: per side with a lesion, a PNG of the axial slice with the
most lesion, in radiological view, with kidney and tumour outlines and a box around each lesion."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_ext.detection.decision import TUMOR

__all__ = ["picture_size", "render_side_picture"]

WINDOW_LEVEL_HU, WINDOW_WIDTH_HU = 40.0, 400.0
# The shorter side of a picture is scaled up (integer factor) to at least this many pixels, so text stays legible.
MIN_PICTURE_PIXELS = 512


def picture_size(size_xy: tuple[int, int], spacing_xy: tuple[float, float]) -> tuple[int, int]:
    """(width, height) of a picture of an axial slice: square pixels of the finer spacing, scaled up by an integer
    factor until the shorter side has at least MIN_PICTURE_PIXELS."""
    finest = min(spacing_xy)
    width, height = (round(n * s / finest) for n, s in zip(size_xy, spacing_xy))
    factor = max(1, math.ceil(MIN_PICTURE_PIXELS / min(width, height)))
    return width * factor, height * factor


def render_side_picture(ct: sitk.Image, labels: sitk.Image, lesions: sitk.Image, numbers: Sequence[int],
                        path: Path, title: Sequence[str]) -> dict:
    """Write a PNG of the axial slice where the lesions ``numbers`` (values of ``lesions``) have the largest area.

    The slice is shown in radiological convention (patient right on the picture's left, anterior up) whatever the
    input's orientation, at CT window level 40 / width 400 HU, with kidney outlines in green, tumour outlines in
    red, a yellow box around each listed lesion in the slice, R/L/A/P markers and ``title`` in the top-left corner.
    Returns the slice's patient z (mm), its index in the input's third axis and the picture's size.
    """
    from PIL import Image, ImageDraw, ImageFont

    oriented = [sitk.DICOMOrient(image, "LPS") for image in (ct, labels, lesions)]
    ct_array, label_array, lesion_array = (sitk.GetArrayViewFromImage(image) for image in oriented)
    selected = np.isin(lesion_array, numbers)
    k = int(np.argmax(selected.sum(axis=(1, 2))))

    spacing = oriented[0].GetSpacing()
    width, height = picture_size((ct_array.shape[2], ct_array.shape[1]), spacing[:2])
    low = WINDOW_LEVEL_HU - WINDOW_WIDTH_HU / 2
    grey = np.clip((ct_array[k].astype(np.float32) - low) / WINDOW_WIDTH_HU * 255.0, 0, 255).astype(np.uint8)
    picture = Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR).convert("RGB")
    canvas = np.asarray(picture).copy()
    line = max(1, round(min(width, height) / 256))
    for mask, colour in ((label_array[k] > 0, (0, 220, 0)), (label_array[k] == TUMOR, (255, 40, 40))):
        canvas[_outline(_upscale(mask, width, height), line)] = colour
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)

    scale_x, scale_y = width / ct_array.shape[2], height / ct_array.shape[1]
    for number, box in enumerate(ndimage.find_objects(lesion_array), start=1):
        if box is None or number not in numbers or not box[0].start <= k < box[0].stop:
            continue
        pad = 2 * line
        draw.rectangle([box[2].start * scale_x - pad, box[1].start * scale_y - pad,
                        box[2].stop * scale_x + pad - 1, box[1].stop * scale_y + pad - 1],
                       outline=(255, 220, 0), width=line)

    font = ImageFont.load_default(size=max(10, min(width, height) // 36))
    text = {"fill": (255, 255, 255), "stroke_width": 2, "stroke_fill": (0, 0, 0), "font": font}
    margin = font.size // 2
    draw.text((margin, height / 2), "R", anchor="lm", **text)
    draw.text((width - margin, height / 2), "L", anchor="rm", **text)
    draw.text((width / 2, margin), "A", anchor="mt", **text)
    draw.text((width / 2, height - margin), "P", anchor="mb", **text)
    draw.multiline_text((margin, margin), "\n".join(title), **text)
    draw.text((width - margin, height - margin), f"W{WINDOW_WIDTH_HU:g} L{WINDOW_LEVEL_HU:g}", anchor="rb", **text)

    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    centre = oriented[0].TransformIndexToPhysicalPoint([ct_array.shape[2] // 2, ct_array.shape[1] // 2, k])
    return {"file": path.name, "axial_z_mm": round(centre[2], 2),
            "input_slice_index": ct.TransformPhysicalPointToIndex(centre)[2], "size": [width, height]}


def _upscale(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    rows = (np.arange(height) * mask.shape[0] // height)
    columns = (np.arange(width) * mask.shape[1] // width)
    return mask[rows[:, None], columns[None, :]]


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=width, border_value=0)
