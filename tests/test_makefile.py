"""The Makefile's notebook targets, read with `make -n` (nothing runs): parameters and output folders."""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry(*args) -> str:
    return subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_lab_binds_to_localhost_and_works_as_root():
    out = dry("lab")
    assert "--ip=127.0.0.1" in out
    assert ("--allow-root" in out) == (os.getuid() == 0)


def test_notebook_targets_pass_the_feature_parameters_and_name_the_run(tmp_path):
    cfg = tmp_path / "tiny.json"
    cfg.write_text("{}")
    out = dry("table1", "PROFILE=paper", f"MODEL={cfg}", "CHECKPOINT=weights.safetensors", "DEVICE=cpu", "C=40")
    assert f"-p model '{cfg}'" in out and f"-p checkpoint '{ROOT / 'weights.safetensors'}'" in out
    assert "-p device 'cpu'" in out and "-p C '40'" in out
    assert "--no-progress-bar" not in out  # papermill shows its progress
    # the executed copy goes to a folder named after the parameters: two runs never share it
    assert "results/paper/notebooks/MODEL-tiny.json.CHECKPOINT-weights.safetensors.C-40/01_table1_main_results.ipynb" in out
    assert "results/demo/notebooks/default/01_table1_main_results.ipynb" in dry("table1")


def test_make_features_takes_the_same_parameters(tmp_path):
    out = dry("features", "MODEL=ViT-B-16", "PRETRAINED=openai", "CHECKPOINT=w.pt", "CORPUS=wordnet-n", "PROMPTS=basic")
    for part in ("--model ViT-B-16", "--pretrained openai", f"--checkpoint {ROOT / 'w.pt'}", "--corpus wordnet-n",
                 "--prompts basic", "--device auto"):
        assert part in out
