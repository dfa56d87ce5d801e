#!/usr/bin/env bash
# RccSegmentor on KiTS23 (contrast CT; regions kidney / masses / tumour), 2d configuration, then the RCC
# detection workflow on the test cases: a per-side verdict and key-slice pictures.
DATASET_ID=220
DATASET_NAME=KiTS2023
CONFIGURATION=2d
TRAINER=nnUNetTrainerRccSegmentor
DOWNLOAD_HINT="Download KiTS23 (https://github.com/neheller/kits23: its kits23/dataset folder after
'kits23_download_data') and pass the folder holding the case_XXXXX folders."
source "$(dirname "$0")/../common.sh"

convert_public_data() {
    run python -m nnunetv2.dataset_conversion.Dataset220_KiTS2023 "$DATA_DIR" -d "$DATASET_ID"
}

make_synthetic_data() {
    DATASET_ID=914
    make_synthetic_dataset --regions
}

run_example "$@"
# KiTS labels: 1 kidney, 2 tumour, 3 cyst. detect also reads DICOM series folders (see nnunet-ext dicom2nifti).
run nnunet-ext detect -i "$(test_images_folder)" -o "$OUT_DIR/detection" -d "$DATASET_ID" -c "$CONFIGURATION" \
    -tr "$TRAINER" -f "${FOLDS[@]}" --kidney-label 1 --tumor-label 2 --overwrite
echo "Detection reports: $OUT_DIR/detection/summary.csv"
