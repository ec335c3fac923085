"""Builds the proto stubs as part of building the package (wheel or editable)."""

import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        script = Path(__file__).parent / "scripts" / "build_protos.py"
        subprocess.run([sys.executable, str(script)], check=True)
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
