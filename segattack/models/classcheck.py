"""What a model predicts, known before any work: the classes of a spec, read without the attack's machinery.

A report's workers load its models; before its cluster starts, the process that plans it resolves
every spec and reads the classes its model predicts (:func:`spec_classes`): VOC-21 for the study
backbones and ``torchvision:`` models, an ``hf:`` config's ``id2label`` (a hub id found in the HF
cache, or the hub asked, at once refused when it cannot be reached), an ``smp:`` checkpoint's head,
one forward pass of a ``module:`` model at the run's own size. :func:`check_classes` refuses a
model whose classes are not the images', with the same message for a spec and for a loaded model
(:func:`model_classes`), so ``segattack attack`` and ``segattack report`` refuse alike.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from segattack.data.classes import NUM_CLASSES
from segattack.data.labels import LabelSpace, from_id2label
from segattack.models import checkpoints
from segattack.models import specs as zoo
from segattack.models.wrapper import SegmentationModel, WeightsUnavailable, parse_window

Classes = LabelSpace | int  # a model's named classes, or only how many it predicts


def spec_classes(spec: str, size: int, window: str = "", download: bool = True) -> Classes:
    """The classes ``spec``'s model predicts, read from its files (a ``module:`` model built and run
    once on a random ``size`` px image, through ``window`` as a run would)."""
    known = zoo.known_labels(spec)
    if known is not None:
        return known
    kind, rest = zoo.split_spec(spec)
    if kind == "hf":
        return _hf_classes(spec, rest, download)
    if kind == "smp":
        return _smp_classes(spec, rest)
    net, info, (mean, std) = zoo._module(spec, rest)
    model = SegmentationModel(net, info, mean, std, channels_last=False)
    model.window = parse_window(window)
    return probe_classes(model, size, spec)


def model_classes(model: SegmentationModel, size: int, name: str) -> Classes:
    """The classes a loaded model predicts: its named ``id2label``, else its class count (read by one
    forward pass at ``size`` px where loading could not say, and recorded in its weights info)."""
    id2label, count = model.info.extra.get("id2label"), model.info.extra.get("num_classes")
    if id2label and zoo._named(id2label):
        return from_id2label(id2label, f"{name}'s id2label")
    if count is None:
        count = model.info.extra["num_classes"] = probe_classes(model, size, name)
    return int(count)


def check_classes(classes: Classes, data: LabelSpace, name: str) -> None:
    """Refuse a model predicting ``classes`` on images labelled in ``data``."""
    if isinstance(classes, LabelSpace):
        classes.check_matches(data, f"model {name}", "the images")
    elif classes != data.num_classes:
        raise ValueError(
            f"model {name} predicts {classes} classes but the images are labelled in {data.name} "
            f"({data.num_classes} classes)"
        )


def probe_classes(model: SegmentationModel, size: int, name: str) -> int:
    """The class count of one forward pass of a random ``size`` px image (eval mode, state restored),
    refusing an output that is not (B, C, H, W) class scores."""
    from segattack.attacks._common import attack_mode

    probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with attack_mode(model), torch.no_grad():
            out = model(probe.to(model.mean.device))
    except Exception as exc:
        raise zoo.SpecError(
            f"model {name}: its class count cannot be read: one forward pass of a {size} px image (the run's "
            f"size) failed with {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from None
    if out.shape[1] < 2:
        raise zoo.SpecError(f"model {name} returned {out.shape[1]} channel(s); class scores need one per class, >= 2")
    return int(out.shape[1])


def _hf_classes(spec: str, where: str, download: bool) -> Classes:
    if importlib.util.find_spec("transformers") is None:
        raise zoo.SpecError(f"{spec} needs transformers: pip install 'segattack[hf]'")
    if zoo._looks_local(where):
        folder = Path(where).expanduser().resolve()
        if not folder.is_dir():
            raise zoo.SpecError(f"{spec}: no such directory {folder}")
        config = folder / "config.json"
        if not config.is_file():
            raise zoo.SpecError(f"{spec}: {folder} holds no config.json; save the model there with save_pretrained")
    else:
        config = _hub_config(spec, where, download)
    data = zoo._read_json(config, spec) or {}
    if "auto_map" in data:  # refused before its classes are read, as loading it would be
        raise zoo.remote_code_refused(spec)
    try:
        id2label = data.get("id2label") or {i: f"LABEL_{i}" for i in range(int(data.get("num_labels", 2)))}
    except (ValueError, TypeError) as exc:
        raise zoo.SpecError(f"{spec}: {config} is not a readable model config ({exc})") from None
    return from_id2label(id2label, f"{spec}'s id2label") if zoo._named(id2label) else len(id2label)


def _hub_config(spec: str, repo: str, download: bool) -> Path:
    """A hub repository's ``config.json``: from the HF cache, else from the hub where it answers."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    if not download:
        raise WeightsUnavailable(
            f"{spec}: not in a local directory or the Hugging Face cache (HF_HOME={zoo._hf_home()}), and download=False"
        )
    zoo.check_hub(spec)
    try:
        return Path(hf_hub_download(repo, "config.json"))
    except Exception as exc:  # no such repository, gated, the hub gone since it answered
        raise WeightsUnavailable(f"{spec}: the hub has no config.json for {repo} ({type(exc).__name__})") from None


def _smp_classes(spec: str, rest: str) -> int:
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise zoo.SpecError(f"{spec} needs segmentation-models-pytorch: pip install 'segattack[smp]'")
    checkpoint = zoo._smp_parts(spec, rest)[2]
    if checkpoint is None:
        return NUM_CLASSES  # untrained: smp's default head, as the loader builds it
    head = checkpoints.read(Path(checkpoint).expanduser().resolve())["state"].get("segmentation_head.0.weight")
    return int(head.shape[0]) if head is not None else NUM_CLASSES
