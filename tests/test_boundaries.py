"""The architecture's rules (STYLE §1): components never import Prefect; flows hold no ML code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "components").rglob("*.py")), ids=str)
def test_components_do_not_import_prefect(path: Path) -> None:
    assert "prefect" not in imported_modules(path), f"{path} imports Prefect"


@pytest.mark.parametrize("path", sorted((ROOT / "flows").rglob("*.py")), ids=str)
def test_flows_hold_no_ml_code(path: Path) -> None:
    ml = {"tensorflow", "keras", "apache_beam", "tensorflow_data_validation", "mlflow", "numpy"}
    assert not ml & imported_modules(path), f"{path} imports ML libraries: keep them in components"


def test_boundary_check_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom prefect.artifacts import x\nimport keras.layers\n")
    assert imported_modules(sample) == {"os", "prefect", "keras"}
