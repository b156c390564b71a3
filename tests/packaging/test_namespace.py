"""The installed distribution lives under one import namespace, ``neurolabel.``: its wheel, installed
into a fresh environment beside a distribution that ships its own top-level ``core`` and
``service`` packages, leaves both importable."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("core", "activations", "ontology", "explainers", "scoring", "lm", "storage", "service", "pipeline",
           "client")


def _run(*cmd: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT))
    [whl] = out.glob("neurolabel-*.whl")
    return whl


def test_wheel_holds_only_the_neurolabel_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"neurolabel"}
    for folder in FOLDERS:  # every product folder is inside, as neurolabel.<folder>
        assert f"neurolabel/{folder}/__init__.py" in names
    assert "neurolabel/storage/migrations/versions/0001_initial_schema.py" in names
    assert "neurolabel/explainers/prompts/llm_summary_user.txt" in names  # package data too
    assert "neurolabel/pipeline/examples/clinical/a.txt" in names and "neurolabel/pipeline/examples/prompts.txt" in names
    assert "neurolabel/pipeline/examples/clinical.ttl" in names and "neurolabel/ontology/identity.py" in names


def test_installs_beside_a_distribution_with_its_own_core_and_service(wheel, tmp_path):
    dummy = tmp_path / "dummy"
    for pkg in ("core", "service"):
        (dummy / pkg).mkdir(parents=True)
        (dummy / pkg / "__init__.py").write_text(f"WHO = 'dummy {pkg}'\n")
    (dummy / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dummy-core-service"\nversion = "1.0"\n'
        '[tool.setuptools]\npackages = ["core", "service"]\n'
    )
    wheels = tmp_path / "wheels"
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(dummy))
    site = tmp_path / "site"  # a fresh site folder holding just the two distributions
    _run(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
         str(wheel), *map(str, wheels.glob("*.whl")))
    # -S: no site-packages (so not the checkout's editable install), only the fresh folder
    out = _run(sys.executable, "-S", "-c", (
        f"import sys; sys.path.insert(0, {str(site)!r})\n"
        "import core, service, neurolabel, neurolabel.core.types as t, neurolabel.core.errors as e\n"
        "print(core.WHO, '|', service.WHO, '|', t.NeuronId(1, 2), '|', e.ConfigError.__module__)"
    ), cwd=tmp_path)
    assert out.strip() == "dummy core | dummy service | 1:2 | neurolabel.core.errors"
