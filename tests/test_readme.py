"""The README's library example works as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL).group(1)
    torch.manual_seed(0)
    namespace = {"my_segmenter": torch.nn.Conv2d(3, 21, 1)}
    exec(compile(code.replace("steps=50", "steps=2").replace("steps=100", "steps=2"), "README", "exec"), namespace)
    assert namespace["asm"].adv.shape == (4, 3, 128, 128)
    assert namespace["pgd_linf"].adv.min() >= 0


def test_readme_names_both_commands():
    text = README.read_text()
    assert "make report" in text and "make test" in text
    # CI runs exactly the README's test command, which does its own set-up (no step of CI's own)
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text().splitlines()
    steps = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert steps == ["make test"]
