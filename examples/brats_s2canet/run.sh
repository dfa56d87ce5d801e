#!/usr/bin/env bash
# S2CA-Net on BraTS 2021 (4 MRI sequences; regions whole tumour / tumour core / enhancing tumour), 3d_fullres,
# from the downloaded data to a BraTS-labelled submission folder.
DATASET_ID=137
DATASET_NAME=BraTS2021
CONFIGURATION=3d_fullres
TRAINER=nnUNetTrainerS2CANet
DOWNLOAD_HINT="Download BraTS 2021 (RSNA-ASNR-MICCAI, https://www.synapse.org/#!Synapse:syn25829067) and pass the
unpacked folder holding the BraTS2021_XXXXX case folders (training; validation cases without *_seg go to imagesTs)."
source "$(dirname "$0")/../common.sh"

convert_public_data() {
    run python "$(dirname "$0")/convert_brats.py" "$DATA_DIR" -d "$DATASET_ID"
}

make_synthetic_data() {
    DATASET_ID=913
    make_synthetic_dataset --channels 4 --regions
}

run_example "$@"
# BraTS scores labels 1/2/4: nnU-Net's converter maps the predictions back
run python -c "import sys; from nnunetv2.dataset_conversion.Dataset137_BraTS21 import \
convert_folder_with_preds_back_to_BraTS_labeling_convention as back; back(sys.argv[1], sys.argv[2], 1)" \
    "$OUT_DIR/predictions" "$OUT_DIR/submission"
echo "BraTS submission: $OUT_DIR/submission"
