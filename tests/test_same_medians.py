"""benchmarks/same_medians.py: two runs' medians per (shape, candidate), paired only when the same
measurement (dtype, mode, device), and JSON without NaN."""

import json
import subprocess
import sys

import pandas as pd
from helpers import ROOT

SCRIPT = ROOT / "benchmarks" / "same_medians.py"
COLUMNS = ["shape", "candidate", "dtype", "mode", "device", "status", "median_ms", "ci95_lo_ms", "ci95_hi_ms"]


def summary(path, rows):
    pd.DataFrame(rows, columns=COLUMNS).to_csv(path, index=False)
    return path


def test_pairs_the_same_measurement_and_writes_json_without_nan(tmp_path):
    before = summary(tmp_path / "before.csv", [
        ["s", "flash", "bfloat16", "forward", "cuda", "ok", 1.00, 0.99, 1.01],
        ["s", "math", "bfloat16", "forward", "cuda", "ok", 4.00, 3.90, 4.10],
        ["s", "cudnn", "bfloat16", "forward", "cuda", "ok", 2.00, None, None],  # no CI
        ["s", "efficient", "bfloat16", "forward", "cuda", "unsupported", None, None, None],
    ])  # fmt: skip
    after = summary(tmp_path / "after.csv", [
        ["s", "flash", "bfloat16", "forward", "cuda", "ok", 1.005, 1.00, 1.01],
        ["s", "math", "float16", "forward", "cuda", "ok", 2.00, 1.90, 2.10],  # another dtype: not a pair
        ["s", "cudnn", "bfloat16", "forward", "cuda", "ok", 2.50, 2.40, 2.60],
        ["s", "efficient", "bfloat16", "forward", "cuda", "ok", 3.00, 2.90, 3.10],  # not ok before
    ])  # fmt: skip
    out = tmp_path / "same.json"
    ran = subprocess.run(
        [sys.executable, str(SCRIPT), str(before), str(after), "--json", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    document = json.loads(out.read_text())  # strict JSON: NaN would not parse back as null
    pairs = {pair["candidate"]: pair for pair in document["pairs"]}
    assert set(pairs) == {"flash", "cudnn"}
    assert pairs["flash"]["ratio"] == 1.005 / 1.00 and pairs["flash"]["cis_overlap"] is True
    assert pairs["cudnn"]["ci95_lo_ms_before"] is None and pairs["cudnn"]["cis_overlap"] is False
    assert document["summary"] == {
        "pairs": 2, "cis_overlap": 1, "after_in_before_ci": 1, "ratio_median": (1.005 + 1.25) / 2,
        "ratio_min": 1.005, "ratio_max": 1.25, "within_2pct": 1, "within_5pct": 1,
    }  # fmt: skip
    assert "cudnn" in ran.stdout and "flash " not in ran.stdout  # only pairs beyond 2% are listed
    assert "NaN" not in out.read_text()
