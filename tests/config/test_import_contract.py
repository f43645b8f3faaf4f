"""The inference workers and the edge gateway import neither Django nor the Django apps."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_hold():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_forbidden_import_breaks_the_contract(tmp_path):
    # given a copy of the workers package that imports Django
    config = (ROOT / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(config)
    packages = ["saas", "tenants", "inference_workers"]
    packages += [f"saas/{app}" for app in ("gateway", "config", "accounts", "audit", "portal", "studies")]
    for package in packages:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "inference_workers" / "leak.py").write_text("import django.db\n")
    # when the linter runs on it, then the contract is reported broken
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "inference_workers.leak -> django (l.1)" in result.stdout
