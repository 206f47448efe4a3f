"""transformers 4.55.4's side of the rows 5.x no longer ships (contrastive, constrained and
group beam search and DoLa moved to Hub repositories): timed in the golden venv
(``scripts/golden_venv.sh``) on the same weights, in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

import ferrogen

from . import memory

GOLDEN_PYTHON = Path(os.environ.get("FERROGEN_GOLDEN_VENV", Path.home() / ".cache/ferrogen-ci/golden-venv")) / "bin/python"


_GOLDEN_TIMER = """
import json, statistics, sys, time, warnings
import torch, transformers
torch.set_num_threads(int(sys.argv[2]))
device = sys.argv[3]
saved = torch.load(sys.argv[1], weights_only=False, map_location="cpu")
config = getattr(transformers, saved["config_class"])(**saved["config"])
model = getattr(transformers, saved["model_class"])(config)
model.load_state_dict(saved["state"], strict=False)
model.eval().to(device)
ids, mask = saved["ids"].to(device), saved["mask"].to(device)
def sync():
    if device.startswith("cuda"):
        torch.cuda.synchronize()
def run():
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return model.generate(input_ids=ids, attention_mask=mask, **saved["settings"])
out = run()
times = []
for _ in range(saved["repeats"]):
    sync(); start = time.perf_counter(); run(); sync(); times.append((time.perf_counter() - start) * 1e3)
mb = peak_extra_mb(run, torch.device(device))
print(json.dumps({"ms": statistics.median(times), "mb": mb, "version": transformers.__version__,
                  "tokens": out.cpu().tolist()}))
"""


def golden_ms(model: Any, ids: torch.Tensor, mask: torch.Tensor, settings: dict,
              repeats: int) -> tuple[Optional[float], Optional[float], str]:
    """Median ms and extra peak memory (MB) of transformers 4.55.4's ``generate`` on the
    same weights, in the golden venv."""
    if not GOLDEN_PYTHON.exists():
        return None, None, "transformers 4.55: golden venv missing (scripts/golden_venv.sh)"
    config = {k: v for k, v in model.config.to_diff_dict().items() if k not in ("transformers_version", "dtype")}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pt"
        torch.save({"config_class": type(model.config).__name__, "model_class": type(model).__name__,
                    "config": config, "state": {k: v.cpu() for k, v in model.state_dict().items()},
                    "ids": ids.cpu(), "mask": mask.cpu(),
                    "settings": settings, "repeats": repeats}, path)
        script = Path(memory.__file__).read_text(encoding="utf-8") + _GOLDEN_TIMER
        done = subprocess.run([str(GOLDEN_PYTHON), "-c", script, str(path), str(torch.get_num_threads()),
                               str(ids.device)],
                              capture_output=True, text=True)
    if done.returncode != 0:
        return None, None, "transformers 4.55 failed: " + done.stderr.strip().splitlines()[-1][:80]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    ours = ferrogen.generate(model, input_ids=ids, attention_mask=mask, **settings)
    sequences = ours if isinstance(ours, torch.Tensor) else ours.sequences
    same = "same tokens" if sequences.cpu().tolist() == result["tokens"] else "TOKENS DIFFER"
    return result["ms"], result["mb"], f"transformers {result['version']} (golden venv), {same}"
