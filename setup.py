"""Builds the proto stubs as part of building the package (wheel or editable)."""

import subprocess
import sys
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithStubs(build_py):
    def run(self) -> None:
        script = Path(__file__).parent / "scripts" / "build_protos.py"
        subprocess.run([sys.executable, str(script)], check=True)
        # The stubs' packages did not exist when the package list was made: look again.
        found = find_packages(include=["brewmesh", "brewmesh.*"])
        self.packages = self.distribution.packages = sorted({*(self.packages or []), *found})
        super().run()


setup(cmdclass={"build_py": BuildPyWithStubs})
