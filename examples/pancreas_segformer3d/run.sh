#!/usr/bin/env bash
# The SegFormer3D variant on the Medical Segmentation Decathlon's Task07 Pancreas (portal-venous CT; pancreas and
# tumour), 3d_fullres.
DATASET_ID=7
DATASET_NAME=Pancreas
CONFIGURATION=3d_fullres
TRAINER=nnUNetTrainerSegFormer3DVariant
DOWNLOAD_HINT="Download Task07_Pancreas.tar from the Medical Segmentation Decathlon (http://medicaldecathlon.com),
unpack it and pass the Task07_Pancreas folder."
source "$(dirname "$0")/../common.sh"

convert_public_data() {
    run nnUNetv2_convert_MSD_dataset -i "$DATA_DIR" -overwrite_id "$DATASET_ID"
}

make_synthetic_data() {
    DATASET_ID=915
    make_synthetic_dataset
}

run_example "$@"
