"""The one module in the folder that nnU-Net's ``nnUNet_extTrainer`` search imports (see nnunet_ext.discovery).

It only re-exports the installed package, so the trainer classes live in ``nnunet_ext.trainers`` for good.
"""
from nnunet_ext.trainers import *  # noqa: F401,F403
