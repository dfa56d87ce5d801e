"""What pip installs: metadata from one source, the licence, declared dependencies, code that runs on the oldest
Python that ``requires-python`` admits, and the command's version."""
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import nnunet_ext
from helpers import run_command, scrubbed_environment

ROOT = Path(__file__).resolve().parents[1]
METADATA = importlib.metadata.metadata("nnunet-ext")


def test_version_has_one_source_and_the_command_prints_it():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'^version\s*=\s*"', pyproject, re.MULTILINE) and 'dynamic = ["version"]' in pyproject
    assert importlib.metadata.version("nnunet-ext") == nnunet_ext.__version__
    out = run_command(["nnunet-ext", "--version"], scrubbed_environment()).stdout
    assert out.strip() == f"nnunet-ext {nnunet_ext.__version__}"


def test_licence_is_the_declared_apache_text():
    assert METADATA["License-Expression"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text


def test_imported_third_party_packages_are_declared():
    declared = {re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0].lower()
                for requirement in importlib.metadata.requires("nnunet-ext") if "extra ==" not in requirement}
    # import name -> distribution name, for what the package imports at some point (the PNG writers among them)
    for module, distribution in {"matplotlib": "matplotlib", "PIL": "pillow", "timm": "timm", "scipy": "scipy",
                                 "SimpleITK": "simpleitk", "torch": "torch", "nnunetv2": "nnunetv2"}.items():
        assert distribution in declared, f"{module} is imported but {distribution} is not a dependency"
    pillow = next(r for r in importlib.metadata.requires("nnunet-ext") if r.lower().startswith("pillow"))
    assert ">=10.1" in pillow  # ImageFont.load_default(size=...)


def test_code_runs_on_the_oldest_supported_python():
    oldest = METADATA["Requires-Python"].removeprefix(">=")
    folders = [str(ROOT / name) for name in ("nnunet_ext", "architectures", "trainers", "benchmarks", "examples",
                                             "tests")]
    result = subprocess.run([str(Path(sys.executable).parent / "vermin"), f"--target={oldest}-", "--no-tips", "--violations",
                             "--eval-annotations", "--backport", "typing", *folders],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"code that needs a newer Python than {oldest}:\n{result.stdout[-3000:]}"
