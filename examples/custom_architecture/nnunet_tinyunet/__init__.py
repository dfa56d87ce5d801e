"""An example plug-in for nnunet-ext: a small network (``network``) and its nnU-Net trainers (``trainers``).

Kept empty of imports on purpose: the network can be used without nnU-Net, and nnunet-ext imports the trainers
only through the entry point.
"""
__version__ = "0.1.0"
