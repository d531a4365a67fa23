"""Build step beside pyproject.toml: the top-level conf/ (the source of truth) is copied
into the wheel as prunebench/conf, so an installed prunebench finds its presets."""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONF = Path(__file__).resolve().parent / "conf"


class BuildWithConf(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:  # editable installs read conf/ in place
            shutil.copytree(CONF, Path(self.build_lib) / "prunebench" / "conf", dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConf})
