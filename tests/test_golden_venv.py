"""The golden venv (``scripts/golden_venv.sh``: transformers 4.55.4 over the main venv's torch)
loads a model and reproduces a stored golden, whatever else the main venv holds.

Creating the venv downloads transformers 4.55.4 and its pinned dependencies from PyPI once
(about a minute); later runs reuse it. The test skips only when that download is impossible
(no network), and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# what pip prints when it cannot reach the package index
_OFFLINE = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
            "No matching distribution found for transformers", "ConnectionError", "Could not fetch URL")

_GOLDEN_RUN = """
import importlib.util, json, sys
import torch, transformers
from golden_models import load_stored
case = json.loads(sys.argv[1])
model = load_stored(case["model"])
with torch.no_grad():
    out = model.generate(input_ids=torch.tensor(case["input_ids"]), attention_mask=torch.tensor(case["attention_mask"]),
                         do_sample=False, **case["kwargs"])
hidden = [name for name in ("ray", "kernels", "hypothesis") if importlib.util.find_spec(name) is not None]
print(json.dumps({"version": transformers.__version__, "sequences": out.tolist(), "visible": hidden}))
"""


@pytest.fixture(scope="module")
def golden_python() -> str:
    try:
        done = subprocess.run([str(ROOT / "scripts" / "golden_venv.sh")], capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/golden_venv.sh ran for more than 15 minutes")
    if done.returncode != 0:
        offline = next((line for line in done.stderr.splitlines() if any(s in line for s in _OFFLINE)), None)
        if offline is not None:
            pytest.skip(f"the golden venv cannot be created: PyPI is unreachable ({offline.strip()[:160]})")
        pytest.fail(f"scripts/golden_venv.sh failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def test_golden_venv_loads_a_model_and_reproduces_a_golden(golden_python):
    golden = json.loads((ROOT / "tests" / "goldens" / "group_beam.json").read_text())
    case = golden["cases"][0]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    done = subprocess.run([golden_python, "-c", _GOLDEN_RUN, json.dumps(case)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == golden["transformers_version"] == "4.55.4"
    assert result["sequences"] == case["sequences"], case["name"]
    assert result["visible"] == [], "packages of the main venv only (not torch's or numpy's) are visible"
