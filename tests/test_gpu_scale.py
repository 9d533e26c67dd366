"""benchmarks/gpu_scale.py at a tiny size on the CPU: every step runs and the table is written."""
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_scale.py"


def test_gpu_scale_runs_on_the_cpu_at_a_reduced_size(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "scale.md"
    assert mod.main(["--scale", "0.0005", "--device", "cpu", "--clusters", "16", "--heads", "2", "--dim", "64",
                     "--out", str(out)]) == 0
    text = out.read_text()
    assert text in capsys.readouterr().out
    for step in ("kNN", "TEMI", "zero-shot top-1", "Eq. 1"):
        assert step in text
    rows = [l for l in text.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert len(rows) == 4 and all(" s |" in r and "GiB" in r for r in rows)
    assert "641 x 64" in text  # 0.0005 of ImageNet's 1,281,167 training images
