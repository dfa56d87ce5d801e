"""RCC detection on top of any trained nnU-Net model: the workflow behind ``nnunet-ext detect``.

One module per job; each imports only the ones listed before it:

- ``decision``: the per-side decision (kidney volume per side, lesions, verdict) and its default thresholds;
- ``pictures``: the key-slice PNG of each side with a lesion;
- ``models``: the trained model folders, their folds and checks, nnU-Net's predictor;
- ``cases``: the input cases (DICOM series or nnU-Net-named images), checked from their headers, then loaded;
- ``settings``: ``DetectionSettings`` (the command's options) and their checks;
- ``outputs``: the output folder: which cases to run, staging a case and publishing it;
- ``reports``: each case's report.json and the output folder's summary.csv;
- ``workflow``: ``run_detection``, which checks everything, then segments, decides and writes case by case.
"""
