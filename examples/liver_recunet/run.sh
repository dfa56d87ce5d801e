#!/usr/bin/env bash
# REC-UNet on the Medical Segmentation Decathlon's Task03 Liver (LiTS CT), 2d configuration, trained as nnU-Net
# regions liver = {liver, tumour} and tumour = {tumour}: the original's two sigmoid channels in one training.
DATASET_ID=3
DATASET_NAME=Liver
CONFIGURATION=2d
TRAINER=nnUNetTrainerRECUNet
DOWNLOAD_HINT="Download Task03_Liver.tar from the Medical Segmentation Decathlon (http://medicaldecathlon.com),
unpack it and pass the Task03_Liver folder."
source "$(dirname "$0")/../common.sh"

convert_public_data() {
    run nnUNetv2_convert_MSD_dataset -i "$DATA_DIR" -overwrite_id "$DATASET_ID"
    run python "$(dirname "$0")/liver_regions.py" "$DATASET_ID"
}

make_synthetic_data() {
    DATASET_ID=916
    make_synthetic_dataset --regions
}

run_example "$@"
