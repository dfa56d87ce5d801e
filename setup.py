"""Installs ``nnunet_ext-trainer-lookup.pth`` next to the packages, in regular and editable installs.

Python runs that one line at start-up; it appends nnunet-ext's trainer folder to ``nnUNet_extTrainer`` so the
stock ``nnUNetv2_*`` commands find our trainers with no manual step (see ``nnunet_ext/discovery.py``).
Everything else about the build lives in pyproject.toml.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "nnunet_ext-trainer-lookup.pth"
PTH_LINE = "import nnunet_ext.discovery as _d; _d.activate()\n"


class build_py_with_pth(build_py):
    def run(self) -> None:
        super().run()
        # An editable build never copies build_lib into the wheel, so write straight into the wheel's root there.
        target = (self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib)
        Path(target).mkdir(parents=True, exist_ok=True)
        Path(target, PTH_NAME).write_text(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, PTH_NAME))]


setup(cmdclass={"build_py": build_py_with_pth})
