"""The notebooks' contract: their parameter defaults are the configs' own, and a notebook rendered for
the grid reads the grid's results, refusing ones made with other parameters instead of recomputing."""

import ast
import json
from dataclasses import fields
from pathlib import Path

import pytest

from segattack.engine.render import RenderError, execute
from segattack.study.config import RunConfig
from segattack.study.runner import run
from segattack.study.studies import StudyConfig

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parameters(notebook: str) -> dict:
    """The literal values assigned in a notebook's papermill ``parameters`` cell."""
    cells = json.loads((NOTEBOOKS / notebook).read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    tree = ast.parse("".join(cell["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


def test_the_attack_notebooks_defaults_are_runconfigs():
    found = parameters("attack.ipynb")
    defaults = {f.name: (f.default_factory() if callable(f.default_factory) else f.default) for f in fields(RunConfig)}
    assert {k: found[k] for k in defaults} == defaults
    assert found["compute"] is True  # interactive by default; the grid passes compute=False


def test_the_studies_notebook_defaults_to_studyconfigs_defaults():
    found = parameters("studies.ipynb")
    assert found["settings"] == {} and StudyConfig(**found["settings"]) == StudyConfig()
    assert found["compute"] is True


@pytest.mark.slow
def test_a_rendered_run_notebook_reads_and_never_recomputes(small_checkpoint, tmp_path):
    cfg = RunConfig(backbone="mobilenet_v3_large", attack="pgd", weights=str(small_checkpoint), num_images=2, steps=2)
    out = tmp_path / "run"
    run(cfg, out, progress=False)
    before = (out / "results.json").read_bytes()
    params = {**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, "out_dir": str(out), "compute": False}
    execute("attack.ipynb", tmp_path / "ok.ipynb", params)
    with pytest.raises(RenderError, match=r"RecordError: .* other parameters: steps=2 \(asked 3\)"):
        execute("attack.ipynb", tmp_path / "bad.ipynb", {**params, "steps": 3})
    assert (out / "results.json").read_bytes() == before  # nothing was recomputed or rewritten


@pytest.mark.slow
def test_papermill_takes_attack_params_as_text(small_checkpoint, tmp_path):
    """papermill's -p passes a dict as text: the notebook hands it to RunConfig, which reads JSON or a literal."""
    cfg = RunConfig(
        backbone="mobilenet_v3_large",
        attack="pgd",
        weights=str(small_checkpoint),
        num_images=2,
        steps=1,
        attack_params={"mode": "linf", "eps": 0.05},
    )
    params = {
        **{f.name: getattr(cfg, f.name) for f in fields(cfg)},
        "attack_params": '{"mode": "linf", "eps": 0.05}',
        "out_dir": str(tmp_path / "run"),
    }
    execute("attack.ipynb", tmp_path / "text.ipynb", params)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["config_hash"] == cfg.digest()
