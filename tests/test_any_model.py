"""Any model, end to end (issue 26): a model loaded once per process under a lock, its class count known
before any work, hub ids resolved in the parent, one line per failed task. Random weights only: the
SegFormer is a tiny config saved with save_pretrained and read back by hf:DIR."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from segattack import cache
from segattack.config import ModelKey

transformers = pytest.importorskip("transformers")
T = transformers
ROOT = Path(__file__).resolve().parent.parent


def save_segformer(where: Path, classes: int = 19) -> Path:
    """A random-init SegFormer of ``classes`` classes and its image processor, saved as a user would."""
    torch.manual_seed(0)
    config = T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16], num_attention_heads=[1, 1],
        decoder_hidden_size=16, patch_sizes=[7, 3], strides=[4, 2], num_labels=classes,
    )  # fmt: skip
    T.SegformerForSemanticSegmentation(config).save_pretrained(where)
    T.SegformerImageProcessor().save_pretrained(where)
    return where


@pytest.fixture(scope="module")
def segformer(tmp_path_factory) -> Path:
    return save_segformer(tmp_path_factory.mktemp("segformer"))


def test_two_tasks_of_one_hf_model_load_it_once(segformer, monkeypatch):
    """Two task threads of one Dask worker asking for one hf: model at once get the same model, loaded
    once (two loads at once imported transformers' lazy modules from two threads: AttributeError)."""
    loads: list[str] = []
    real = cache.load_model

    def counted(backbone: str, *args, **kwargs):
        loads.append(backbone)
        return real(backbone, *args, **kwargs)

    monkeypatch.setattr(cache, "load_model", counted)
    key = ModelKey(f"hf:{segformer}", "auto", "cpu", True, True)
    for attempt in range(12):
        cache.clear_models()
        start, got, errors = threading.Barrier(2), [], []

        def task() -> None:
            start.wait()
            try:
                got.append(cache.cached_model(key))
            except Exception as exc:  # what a Dask task would report
                errors.append(exc)

        threads = [threading.Thread(target=task) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors and len(got) == 2 and got[0] is got[1], (attempt, errors)
    assert len(loads) == 12  # once per attempt, never twice
    cache.clear_models()


def test_the_backends_a_spec_needs_are_imported_before_any_task_thread():
    """import_backends (what each Dask worker runs as it starts) imports transformers' auto classes for
    an hf: spec and smp for an smp: spec, and nothing for a study backbone."""
    code = (
        "import sys\nfrom segattack.zoo import import_backends\n"
        "import_backends(['mobilenet_v3_large'])\n"
        "print('transformers.models.auto.modeling_auto' in sys.modules, 'segmentation_models_pytorch' in sys.modules)\n"
        "import_backends(['hf:org/name', 'smp:Unet:resnet18'])\n"
        "print('transformers.models.auto.modeling_auto' in sys.modules, 'segmentation_models_pytorch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["False", "False", "True", "True"], out.stderr[-2000:]
