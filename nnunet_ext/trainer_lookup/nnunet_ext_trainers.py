"""The one module in the folder that nnU-Net's ``nnUNet_extTrainer`` search imports (see nnunet_ext.discovery).

Its attributes are the trainers of nnunet-ext and of every plug-in package (``nnunet_ext.plugins``); the classes
themselves stay in their installed packages. nnU-Net asks ``hasattr(module, name)``: a name two packages export
raises their clash error here instead of answering with either class.
"""
from nnunet_ext.plugins import lookup_namespace as _lookup_namespace
from nnunet_ext.plugins import scan as _scan

globals().update(_lookup_namespace())


def __getattr__(name: str) -> object:
    error = _scan().clash_error(name)
    if error is not None:
        raise error
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
