"""The registry refactor changed no number: two small runs and one studies cell equal the records kept
before it (tests/golden/before_registry.json, made on the code of 43662a6 with one intra-op thread;
the weights file's absolute path is left out, it names the machine, not a number).

Counts, labels and texts must be equal; a float may differ by float rounding (``REL``): the
cross-entropy over channels_last logits read as (pixel, class) rows sums in another order and
moved the PGD run's L2 norms and losses by up to 3e-7 relative. A pixel changing class moves a
metric of these 64 px images by more than 1e-4."""

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from segattack.study.config import RunConfig
from segattack.study.runner import run
from segattack.study.studies import StudyConfig, run_cell

GOLDEN = json.loads((Path(__file__).parent / "golden" / "before_registry.json").read_text())


REL = 1e-6


def recorded(ours, golden) -> bool:
    """``ours`` holds every value of ``golden``, equal, floats within ``REL`` (objects may hold more keys)."""
    if isinstance(golden, dict):
        return isinstance(ours, dict) and all(k in ours and recorded(ours[k], v) for k, v in golden.items())
    if isinstance(golden, list):
        return isinstance(ours, list) and len(ours) == len(golden) and all(map(recorded, ours, golden))
    if isinstance(golden, float) and isinstance(ours, float):
        return ours == pytest.approx(golden, rel=REL, abs=1e-12)
    return ours == golden


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("attack", ["pgd", "asma"])
def test_a_small_run_gives_the_recorded_numbers(attack, one_thread):
    golden = GOLDEN[attack]
    cfg = RunConfig(**golden["config"])
    with tempfile.TemporaryDirectory() as tmp:
        results, _ = run(cfg, Path(tmp) / "r", progress=False)
    ours = json.loads(results.to_json())
    for key, value in golden.items():  # every recorded number; readings and fields added since are extra
        assert recorded(ours[key], value), key


def test_a_studies_cell_gives_the_recorded_rows(one_thread):
    golden = GOLDEN["studies_cell"]
    record = asdict(run_cell(StudyConfig(**golden["settings"]), golden["cell"]))
    for row in record["comparison"]:
        row.pop("seconds")
    for key, value in golden["record"].items():
        assert recorded(json.loads(json.dumps(record[key])), value), key
