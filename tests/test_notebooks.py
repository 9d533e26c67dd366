"""The committed notebooks: what nbval (``make test``) may skip, and that they carry their demo outputs."""
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
IGNORE_TAG = "nbval-ignore-output"  # nbval's tag; "NBVAL_IGNORE_OUTPUT" is only recognised as a comment line


def code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_is_a_notebook_per_artifact():
    assert len(NOTEBOOKS) == 15 and NOTEBOOKS[0].name == "00_quickstart.ipynb"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_only_the_wall_time_cell_escapes_nbval(path):
    cells = code_cells(path)
    ignored = [c for c in cells if IGNORE_TAG in c.get("metadata", {}).get("tags", [])
               or "NBVAL_IGNORE_OUTPUT" in "".join(c["source"]) or "NBVAL_SKIP" in "".join(c["source"])]
    assert ["".join(c["source"]).strip() for c in ignored] == ["print(N.elapsed(cfg))"]
    nbval_tags = {t for c in cells for t in c.get("metadata", {}).get("tags", []) if t.lower().startswith("nbval")}
    assert nbval_tags == {IGNORE_TAG}  # nbval ignores an upper-case tag silently


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_demo_outputs_and_no_errors(path):
    cells = code_cells(path)
    assert "parameters" in cells[0].get("metadata", {}).get("tags", [])
    assert all(c.get("execution_count") for c in cells), "run `make notebooks` and commit the outputs"
    assert not [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
