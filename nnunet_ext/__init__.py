"""nnunet-ext: published tumour-segmentation architectures as nnU-Net v2 trainers.

Kept import-light on purpose: a ``.pth`` line imports ``nnunet_ext.discovery`` at every Python start-up.
"""
__version__ = "0.1.0"
