# Sourced by the example scripts: argument parsing, checks, and the pipeline every example shares.
#
# An example sets DATASET_ID, DATASET_NAME, CONFIGURATION, TRAINER, DOWNLOAD_HINT and the functions
# convert_public_data (real data) and make_synthetic_data (CI), then calls run_example "$@".
set -euo pipefail

SYNTHETIC=0
DATA_DIR=""
OUT_DIR=""
BASELINE=nnUNetTrainer
FOLDS=(0 1 2 3 4)

usage() {
    cat <<USAGE
usage: $(basename "$0") DATA_DIR [-o OUT_DIR]      the downloaded public data (see below)
       $(basename "$0") --synthetic [-o OUT_DIR]   synthetic data of the same shape and tiny trainers (CI)

$DOWNLOAD_HINT
The nnU-Net folders come from nnUNet_raw, nnUNet_preprocessed and nnUNet_results.
USAGE
}

run() {
    echo "+ $*"
    "$@"
}

fail() {
    echo "$(basename "$0"): error: $*" >&2
    exit 2
}

parse_arguments() {
    while (($#)); do
        case "$1" in
            --synthetic) SYNTHETIC=1 ;;
            -o | --out) [[ $# -ge 2 ]] || fail "$1 needs a folder"; OUT_DIR="$2"; shift ;;
            -h | --help) usage; exit 0 ;;
            -*) usage >&2; fail "unknown option $1" ;;
            *) DATA_DIR="$1" ;;
        esac
        shift
    done
    for variable in nnUNet_raw nnUNet_preprocessed nnUNet_results; do
        [[ -n "${!variable:-}" ]] || fail "$variable is not set: export nnUNet_raw, nnUNet_preprocessed and" \
            "nnUNet_results (nnU-Net's documentation/set_environment_variables.md)"
    done
    if ((SYNTHETIC)); then
        # the same commands on minutes of CPU: short trainer variants, one fold
        TRAINER="${TRAINER}_Smoke"
        BASELINE="${BASELINE}_Smoke"
        FOLDS=(0)
    elif [[ -z "$DATA_DIR" ]]; then
        usage >&2
        fail "no data folder given"
    elif [[ ! -d "$DATA_DIR" ]]; then
        fail "$DATA_DIR is not a folder. $DOWNLOAD_HINT"
    fi
    OUT_DIR="${OUT_DIR:-$PWD/${DATASET_NAME}_submission}"
    DEVICE=$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
}

# the synthetic stand-in: 5 small 3D cases (folds need 5) of the data's kind, extra arguments say which
make_synthetic_dataset() {
    run nnunet-ext synth "$DATASET_ID" --dim 3 --cases 5 --shape 16 32 32 --overwrite "$@"
}

# plan -> cross-validation of ours and nnU-Net's default -> comparison and ensembling -> test-set prediction
run_pipeline() {
    local test_images="$1"
    local planning=(--verify_dataset_integrity)
    # synthetic data is valid by construction and rewritten on every run: never reuse its old fingerprint
    ((SYNTHETIC)) && planning=(--clean)
    run nnUNetv2_plan_and_preprocess -d "$DATASET_ID" -c "$CONFIGURATION" "${planning[@]}"
    run nnunet-ext cv -d "$DATASET_ID" -c "$CONFIGURATION" -tr "$BASELINE" "$TRAINER" -f "${FOLDS[@]}"
    run nnunet-ext benchmark -d "$DATASET_ID" -c "$CONFIGURATION" -tr "$BASELINE" "$TRAINER" \
        --reference "$BASELINE" -f "${FOLDS[@]}" -o "$OUT_DIR/benchmark" --ensemble
    run nnUNetv2_predict -i "$test_images" -o "$OUT_DIR/predictions" -d "$DATASET_ID" -c "$CONFIGURATION" \
        -tr "$TRAINER" -f "${FOLDS[@]}" -device "$DEVICE"
}

run_example() {
    parse_arguments "$@"
    if ((SYNTHETIC)); then
        make_synthetic_data
    else
        convert_public_data
    fi
    run_pipeline "$(test_images_folder)"
    echo "Done: comparison in $OUT_DIR/benchmark/benchmark.md, predictions in $OUT_DIR/predictions"
}

# imagesTs of the converted dataset (nnU-Net's converters and `nnunet-ext synth` both write it)
test_images_folder() {
    local folder
    folder=$(find "$nnUNet_raw" -maxdepth 1 -type d -name "Dataset$(printf %03d "$DATASET_ID")_*" | head -n 1)
    [[ -d "$folder/imagesTs" ]] || fail "no imagesTs in ${folder:-nnUNet_raw/Dataset$DATASET_ID*}"
    echo "$folder/imagesTs"
}
