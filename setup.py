"""wavediff: diffusion vocoders for speech (DiffWave family), recipes and tools."""

import re
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent


def requirements(name: str) -> list[str]:
    lines = (here / "requirements" / f"{name}.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


version = re.search(
    r'^__version__ = "([^"]+)"', (here / "wavediff" / "version.py").read_text(), re.M
).group(1)

setup(
    name="wavediff",
    version=version,
    description="Diffusion vocoders for speech: DiffWave-style models, recipes and tools",
    long_description=(here / "README.md").read_text() if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["wavediff", "wavediff.*"]),
    include_package_data=True,
    package_data={"wavediff": ["py.typed", "pretrained_models/*/config.yaml",
                              "pretrained_models/*/model.safetensors",
                              "pretrained_models/*/card.json",
                              "pretrained_models/*/schedules.yaml"]},
    install_requires=requirements("base"),
    extras_require={
        "eval": requirements("eval"),
        "export": requirements("export"),
        "recipes": requirements("recipes"),
        "dev": requirements("dev") + requirements("eval") + requirements("export")
        + requirements("recipes"),
    },
    entry_points={"console_scripts": ["wavediff = wavediff.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Multimedia :: Sound/Audio :: Speech",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
