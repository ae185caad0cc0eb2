"""Model specs: any segmentation model behind :class:`segattack.models.wrapper.SegmentationModel`.

A spec names a model in one string, the same in the API (``load_model(spec)``), the CLI
(``--model SPEC``) and the notebooks (``model=``):

- ``torchvision:NAME``: a torchvision segmentation model (:data:`segattack.models.backbones.TORCHVISION`:
  FCN ResNet50/101, DeepLabV3 MobileNetV3/ResNet50/ResNet101, LR-ASPP MobileNetV3) with its
  ``COCO_WITH_VOC_LABELS_V1`` weights from ``$TORCH_HOME`` (downloaded and hash-checked as the
  study's backbones are), or a checkpoint path given as ``weights``; normalised as its weights'
  own transforms do;
- ``hf:REPO_OR_DIR``: a Hugging Face ``transformers`` semantic segmentation model, from a local
  directory (``save_pretrained``) or a repository already in the HF cache; the hub is asked only
  when neither has it and ``download`` is allowed. Per-pixel models (SegFormer, UperNet, DPT, BEiT)
  give their ``logits``; mask classifiers (MaskFormer, Mask2Former, OneFormer) give the class
  scores of their semantic post-processing, built differentiably. Normalised with the image
  processor config's ``image_mean``/``image_std`` (and its rescale factor);
- ``smp:ARCH:ENCODER[:CHECKPOINT]``: a segmentation_models_pytorch model (``Unet``, ``FPN``,
  ``DeepLabV3Plus``, ``Segformer``, ...), its weights from ``CHECKPOINT`` read with
  ``weights_only=True`` (without one it is untrained: ``encoder_weights`` would need the hub);
  normalised with ImageNet's statistics, those of smp's pretrained encoders;
- ``module:PKG.MOD:CALLABLE``: ``CALLABLE()`` from an importable module, returning an
  ``nn.Module`` (normalised with ImageNet's statistics) or a :class:`SegmentationModel` (from
  ``wrap_model`` or built with its own mean and std, used as it is). Models whose code does not
  build for this torch (MMSeg's mmcv ops) come in this way, as the user's own function.

Every model comes back in eval mode with frozen weights, its logits upsampled to the input size.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import math
import os
import typing
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from segattack.data.classes import NUM_CLASSES
from segattack.data.labels import VOC, LabelSpace, from_id2label
from segattack.metrics import IMAGENET_MEAN, IMAGENET_STD
from segattack.models import backbones, checkpoints
from segattack.models.backbones import (
    BACKBONES,
    TORCHVISION,
    WEIGHT_SOURCES,
    _load_state,
    _load_torchvision,
    build_torchvision,
    is_checkpoint_path,
)
from segattack.models.wrapper import SegmentationModel, WeightsInfo, WeightsUnavailable, ready
from segattack.util.paths import shown_path

KINDS = ("torchvision", "hf", "smp", "module")
FORMS = "torchvision:NAME, hf:REPO_OR_DIR, smp:ARCH:ENCODER[:CHECKPOINT], module:PKG.MOD:CALLABLE"
MASK_CLASSIFIERS = ("maskformer", "mask2former", "oneformer")  # HF model types scored from class x mask predictions
HUB_TIMEOUT = 5.0  # seconds the Hugging Face hub has to answer before an hf: id in no cache is refused
PROBE = 64  # the side of the random image that checks BN folding and finds a module's class count

Normalisation = tuple[tuple[float, ...], tuple[float, ...]]


class SpecError(ValueError):
    """A model spec that names no model this process can load."""


def split_spec(spec: str) -> tuple[str, str]:
    """``(kind, rest)`` of ``KIND:REST``; one error naming the spec and the accepted forms otherwise."""
    kind, sep, rest = str(spec).partition(":")
    if not sep or kind not in KINDS:
        raise SpecError(
            f"unknown backbone {spec!r}: use a study backbone ({', '.join(BACKBONES)}) or a model spec: {FORMS}"
        )
    if not rest:
        raise SpecError(f"model spec {spec!r} names no model after {kind + ':'!r} ({FORMS})")
    return kind, rest


def resolve_spec(spec: str) -> str:
    """``spec`` with its local paths made absolute (``hf:`` directories, ``smp:`` checkpoints): the
    form to hash into a run's identity and to send to another process. Backbones stay as they are."""
    if spec in BACKBONES:
        return spec
    kind, rest = split_spec(spec)
    if kind == "hf" and _looks_local(rest):
        return f"hf:{Path(rest).expanduser().resolve()}"
    if kind == "smp":
        arch, encoder, checkpoint = _smp_parts(spec, rest)
        return f"smp:{arch}:{encoder}" + (f":{Path(checkpoint).expanduser().resolve()}" if checkpoint else "")
    return spec


def import_backends(specs: Iterable[str]) -> None:
    """Import the optional backends ``specs`` load with (transformers and the classes its loaders read,
    smp) in the calling thread. transformers resolves its names by importing modules lazily, which is
    not thread-safe: a Dask worker calls this before its task threads start. A backend that is not
    installed is left for the loader to name."""
    kinds = {split_spec(s)[0] for s in specs if s not in BACKBONES and s.partition(":")[0] in KINDS}
    if "hf" in kinds:
        with contextlib.suppress(ImportError):
            from transformers import AutoConfig, AutoModelForSemanticSegmentation  # noqa: F401
            from transformers.utils import cached_file  # noqa: F401
    if "smp" in kinds:
        with contextlib.suppress(ImportError):
            import segmentation_models_pytorch  # noqa: F401


def load_spec(
    spec: str,
    weights: str | os.PathLike = "auto",
    device: str | torch.device = "cpu",
    download: bool = True,
    channels_last: bool = True,
    fold_bn: bool = True,
) -> SegmentationModel:
    """The model a spec names, ready for attacks (see the module docstring for each kind).

    ``weights`` chooses the weights of a ``torchvision:`` model (``"auto"`` or ``"torchvision"``:
    the published ones; a checkpoint path); the other kinds carry theirs in the spec and take
    ``"auto"`` only. ``info.extra`` records ``num_classes`` (and ``id2label`` for ``hf:``).
    """
    kind, rest = split_spec(spec)
    weights = os.fspath(weights)
    check_weights(spec, weights)
    if kind == "torchvision":
        net, info, (mean, std) = _torchvision(spec, rest, weights, download)
        model = SegmentationModel(net, info, mean, std, channels_last=channels_last, fold_bn=fold_bn)
        return ready(model, device)
    if kind == "hf":
        net, info, (mean, std) = _huggingface(spec, rest, download)
    elif kind == "smp":
        net, info, (mean, std) = _smp(spec, rest)
    else:
        net, info, (mean, std) = _module(spec, rest)
    net.eval().requires_grad_(False)
    if fold_bn:
        net, info.extra["fold_bn"] = _fold_if_exact(net)
    return ready(SegmentationModel(net, info, mean, std, channels_last=channels_last), device)


def _fold_if_exact(net: nn.Module) -> tuple[nn.Module, bool]:
    """``net`` with its batch norms folded when a probe pass gives the same logits, else ``net`` as it was:
    folding pairs each convolution with the batch norm registered after it, true of most but not all code."""
    from segattack.models.wrapper import fold_batchnorm

    if not any(type(m) is nn.BatchNorm2d for m in net.modules()):
        return net, False
    probe = torch.rand(1, 3, PROBE, PROBE, generator=torch.Generator().manual_seed(0))
    folded = fold_batchnorm(copy.deepcopy(net))
    try:
        with torch.no_grad():
            same = torch.allclose(_logits(net(probe)), _logits(folded(probe)), rtol=1e-3, atol=1e-4)
    except Exception:  # a network that refuses the probe's size: kept as it is
        return net, False
    return (folded, True) if same else (net, False)


def _logits(out: Any) -> torch.Tensor:
    return out["out"] if isinstance(out, dict) else out


def _torchvision(spec: str, name: str, weights: str, download: bool) -> tuple[nn.Module, WeightsInfo, Normalisation]:
    if name not in TORCHVISION:
        raise SpecError(f"unknown torchvision model in {spec!r}; choose one of {', '.join(TORCHVISION)}")
    published = TORCHVISION[name][1].COCO_WITH_VOC_LABELS_V1
    if weights in ("auto", "torchvision"):
        net, info = _load_torchvision(name, download)
    else:  # a checkpoint path (check_weights refused the rest)
        path = Path(weights).expanduser().resolve()
        net = build_torchvision(name)
        _load_state(net, checkpoints.read(path)["state"], path, name)
        info = WeightsInfo(
            "checkpoint",
            name,
            f"checkpoint {path.name}",
            extra={"file": shown_path(path), "sha256": backbones.file_sha256(path)},
        )
    transform = published.transforms()
    info.backbone = spec
    info.extra.update(
        num_classes=NUM_CLASSES, labels=list(published.meta["categories"]), normalization=f"{published} transforms"
    )
    return net, info, (tuple(transform.mean), tuple(transform.std))


def _looks_local(where: str) -> bool:
    """A directory rather than a hub repository id: it exists, or it is written as a path."""
    return os.path.isdir(os.path.expanduser(where)) or where.startswith(("/", ".", "~")) or where.count("/") > 1


class HFSemantic(nn.Module):
    """A ``transformers`` segmentation model as a function from normalised images to class scores.

    Per-pixel models give their ``logits``. Mask classifiers give, as their
    ``post_process_semantic_segmentation`` does, ``einsum('bqc,bqhw->bchw', softmax(class
    logits)[..., :-1], sigmoid(mask logits))`` (Mask2Former's masks first resized to 384 x 384, as
    its post-processing does); differentiable end to end. The wrapper upsamples to the input size.
    """

    def __init__(self, model: nn.Module, model_type: str, task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.model, self.model_type = model, model_type
        accepted = inspect.signature(model.forward).parameters
        self.extra_inputs = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in accepted else {}
        if task_inputs is not None:  # OneFormer's "the task is semantic", tokenised once
            self.register_buffer("task_inputs", task_inputs, persistent=False)
        else:
            self.task_inputs = None
        self.training = model.training

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        kwargs = dict(self.extra_inputs)
        if self.task_inputs is not None:
            kwargs["task_inputs"] = self.task_inputs.expand(pixel_values.shape[0], -1)
        out = self.model(pixel_values=pixel_values, **kwargs)
        if self.model_type not in MASK_CLASSIFIERS:
            return out.logits
        masks = out.masks_queries_logits
        if self.model_type == "mask2former":
            masks = F.interpolate(masks, size=(384, 384), mode="bilinear", align_corners=False)
        classes = out.class_queries_logits.softmax(dim=-1)[..., :-1]  # the last class is "no object"
        return torch.einsum("bqc,bqhw->bchw", classes, masks.sigmoid())


def _huggingface(spec: str, where: str, download: bool) -> tuple[nn.Module, WeightsInfo, Normalisation]:
    try:
        import transformers
        from transformers.utils import cached_file
    except ImportError:
        raise SpecError(f"{spec} needs transformers: pip install 'segattack[hf]'") from None
    local = _looks_local(where)
    if local:
        where = str(Path(where).expanduser().resolve())
        if not os.path.isdir(where):
            raise SpecError(f"{spec}: no such directory {where}")
        if not os.path.isfile(os.path.join(where, "config.json")):
            raise SpecError(
                f"{spec}: {where} holds no config.json; save the model there with "
                f"model.save_pretrained({where!r}) (and its image processor's save_pretrained)"
            )

        _read_json(Path(where) / "config.json", spec)  # a broken file is named before transformers reads it
        _read_json(Path(where) / "preprocessor_config.json", spec, required=False)

    def fetch(offline: bool) -> tuple[Any, nn.Module, dict[str, Any]]:
        # trust_remote_code=False: a repository's own code (an auto_map) is never run, and transformers
        # never asks on standard input whether to run it
        config = transformers.AutoConfig.from_pretrained(where, local_files_only=offline, trust_remote_code=False)
        cls: Any = {
            "maskformer": transformers.MaskFormerForInstanceSegmentation,
            "mask2former": transformers.Mask2FormerForUniversalSegmentation,
            "oneformer": transformers.OneFormerForUniversalSegmentation,
        }.get(config.model_type, transformers.AutoModelForSemanticSegmentation)
        model, loading = cls.from_pretrained(
            where,
            local_files_only=offline,
            dtype=torch.float32,
            trust_remote_code=False,
            output_loading_info=True,
        )
        return config, model, loading

    try:
        try:
            config, model, loading = fetch(offline=True)
        except OSError:
            if local or not download:
                raise
            check_hub(spec)
            config, model, loading = fetch(offline=False)
    except OSError as exc:
        offline = "" if download else ", and download=False"
        raise WeightsUnavailable(
            f"{spec}: not in a local directory or the Hugging Face cache (HF_HOME={_hf_home()}){offline}: {exc}"
        ) from None
    except ValueError as exc:  # a config of no semantic segmentation model, or one that needs its own code
        if "trust_remote_code" in str(exc) or "custom code" in str(exc):
            raise remote_code_refused(spec) from None
        raise SpecError(f"{spec}: not a semantic segmentation model ({_first_line(exc)})") from None
    _check_loading(spec, loading)
    oneformer = config.model_type == "oneformer"
    task_inputs = _oneformer_task(spec, where, config, local or not download) if oneformer else None
    processor = cached_file(
        where,
        "preprocessor_config.json",
        local_files_only=local or not download,
        _raise_exceptions_for_missing_entries=False,
    )
    mean, std, how = _hf_normalisation(_read_json(Path(processor), spec) if processor else None, spec, processor)
    id2label = {int(k): v for k, v in config.id2label.items()}
    num_classes = len(id2label)
    info = WeightsInfo(
        "hf",
        spec,
        f"transformers {type(model).__name__} from {shown_path(where) if local else where}",
        extra={
            "where": shown_path(where) if local else where,
            "model_type": config.model_type,
            "num_classes": num_classes,
            "id2label": id2label,
            "normalization": how,
        },
    )
    return HFSemantic(model.eval(), config.model_type, task_inputs), info, (mean, std)


def remote_code_refused(spec: str) -> SpecError:
    """The one message for a config that names its repository's own code (an ``auto_map``)."""
    return SpecError(
        f"{spec}: its config names the repository's own code (auto_map), which segattack never runs; "
        f"use a model transformers ships, or build yours with your code through module:PKG.MOD:CALLABLE"
    )


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _read_json(path: Path, spec: str, required: bool = True) -> dict[str, Any] | None:
    """A model folder's JSON file as a dict; a missing optional one is None, a broken one one message
    naming it and what to do."""
    if not required and not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{spec}: {path} is not text (not UTF-8); save it again with save_pretrained") from None
    except ValueError as exc:
        raise SpecError(f"{spec}: {path} is not valid JSON ({exc}); save it again with save_pretrained") from None
    except OSError as exc:
        raise SpecError(f"{spec}: cannot read {path} ({exc.strerror or exc})") from None
    if not isinstance(doc, dict):
        raise SpecError(f"{spec}: {path} holds a JSON {type(doc).__name__}, not an object; save it again")
    return doc


def _check_loading(spec: str, loading: dict[str, Any]) -> None:
    """Refuse weights that leave parameters random (missing keys: a decode head not in the file) or
    that the model has no place for (unexpected keys, other shapes), naming the first of them."""
    parts = [
        f"{what}: {', '.join(str(k) for k in sorted(map(str, keys))[:3])}" + (", ..." if len(keys) > 3 else "")
        for what, keys in (
            ("missing (left random)", loading.get("missing_keys") or []),
            ("unexpected", loading.get("unexpected_keys") or []),
            ("wrong shapes", [k[0] if isinstance(k, tuple) else k for k in loading.get("mismatched_keys") or []]),
        )
        if keys
    ]
    if parts:
        raise SpecError(
            f"{spec}: its weights do not fit its config ({'; '.join(parts)}); save the trained model with "
            f"save_pretrained, config and weights together"
        )


def _hf_home() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HOME)


def check_hub(spec: str, timeout: float = HUB_TIMEOUT) -> None:
    """Refuse at once an ``hf:`` hub id that is in no cache when the hub cannot be asked (nothing
    answers at its endpoint within ``timeout`` s, or ``HF_HUB_OFFLINE`` is set): one line naming
    ``HF_HOME`` and ``HF_HUB_OFFLINE=1``, not a minute of the hub client's retries."""
    from huggingface_hub import constants, get_session

    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        try:
            get_session().head(constants.ENDPOINT, timeout=timeout)  # any answer: the hub can be asked
            return
        except Exception as exc:  # refused, unresolvable, timed out, a proxy that does not answer, ...
            why = f"nothing answered at {constants.ENDPOINT}: {type(exc).__name__}"
    raise WeightsUnavailable(
        f"{spec}: not in a local directory or the Hugging Face cache (HF_HOME={constants.HF_HOME}) and the hub "
        f"cannot be reached ({why}); download it where the hub answers and point HF_HOME at that cache, or save it "
        f"to a folder and use hf:DIR; HF_HUB_OFFLINE=1 never asks the hub"
    )


def _hf_normalisation(
    processor: dict[str, Any] | None, spec: str, file: str | None = "preprocessor_config.json"
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """Mean and std in [0,1] pixel space from an image processor config: the processor maps 8-bit
    values ``v`` to ``(v * r - mean) / std`` (``r`` its rescale factor, 1 without rescaling), and our
    images are ``v / 255``, so the same map is ``(x - mean / (255 r)) / (std / (255 r))``."""
    if processor is None:
        warnings.warn(f"{spec} has no preprocessor_config.json: normalised with ImageNet's mean and std", stacklevel=4)
        return IMAGENET_MEAN, IMAGENET_STD, "ImageNet (no image processor config)"
    where = f"{spec}: {file}"
    rescale = _numbers(processor, "rescale_factor", [1 / 255], where, positive=True)[0]
    scale = 255.0 * (rescale if processor.get("do_rescale", True) else 1.0)
    if not processor.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1 / scale,) * 3, "none (do_normalize false)"
    mean = _numbers(processor, "image_mean", list(IMAGENET_MEAN), where, count=3)
    std = _numbers(processor, "image_std", list(IMAGENET_STD), where, count=3, positive=True)
    return (
        tuple(m / scale for m in mean),
        tuple(s / scale for s in std),
        f"image processor config: mean {list(mean)}, std {list(std)}, rescale {scale / 255:g}",
    )


def _numbers(
    processor: dict[str, Any], key: str, default: list[float], where: str, count: int = 1, positive: bool = False
) -> list[float]:
    """``processor[key]`` as ``count`` finite numbers (positive ones where ``positive``: a std or a rescale
    factor of 0 would divide by zero); one message naming the file's key otherwise."""
    value = processor.get(key, default)
    values = value if isinstance(value, list) else [value]
    ok = len(values) in (1, count) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 or not positive)
        for v in values
    )
    if not ok:
        need = f"{count} finite {'positive ' if positive else ''}numbers" if count > 1 else "a finite positive number"
        raise SpecError(
            f"{where}'s {key} must be {need}, got {value!r}; fix it or save the image "
            f"processor again with save_pretrained"
        )
    return [float(v) for v in values] * (count // len(values))


def _oneformer_task(spec: str, where: str, config: Any, offline: bool) -> torch.Tensor:
    """OneFormer's task tokens for "the task is semantic", from the processor saved beside the model."""
    from transformers import OneFormerProcessor

    try:
        processor = OneFormerProcessor.from_pretrained(where, local_files_only=offline, trust_remote_code=False)
    except (OSError, ValueError, TypeError) as exc:
        raise SpecError(
            f"{spec}: OneFormer needs its processor (tokenizer included) beside the model to encode "
            f"the task 'the task is semantic': {exc}"
        ) from None
    tokens = processor._preprocess_text(["the task is semantic"], max_length=config.task_seq_len)
    return tokens.float()


def _smp_parts(spec: str, rest: str) -> tuple[str, str, str | None]:
    parts = rest.split(":", 2)
    if len(parts) < 2 or not all(parts[:2]):
        raise SpecError(f"model spec {spec!r}: smp specs are smp:ARCH:ENCODER[:CHECKPOINT], e.g. smp:Unet:resnet34")
    return parts[0], parts[1], parts[2] if len(parts) == 3 and parts[2] else None


def _smp(spec: str, rest: str) -> tuple[nn.Module, WeightsInfo, Normalisation]:
    try:
        import segmentation_models_pytorch as smp
    except ImportError:
        raise SpecError(f"{spec} needs segmentation-models-pytorch: pip install 'segattack[smp]'") from None
    arch, encoder, checkpoint = _smp_parts(spec, rest)
    state, classes, path = None, NUM_CLASSES, None
    if checkpoint:
        path = Path(checkpoint).expanduser().resolve()
        state = checkpoints.read(path)["state"]  # weights_only=True
        head = state.get("segmentation_head.0.weight")
        classes = int(head.shape[0]) if head is not None else classes
    try:
        net = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=classes)
    except (KeyError, ValueError) as exc:
        raise SpecError(f"model spec {spec!r}: {exc}") from None
    net.classification_head = None  # smp's optional image-level head: a second output no attack reads
    if state is not None and path is not None:
        _load_state(
            net,
            {k: v for k, v in state.items() if not k.startswith("classification_head.")},
            path,
            f"smp {arch}/{encoder}",
        )
        description = f"smp {arch} ({encoder}) from {path.name}"
    else:
        description = f"smp {arch} ({encoder}), UNTRAINED: random weights (no checkpoint in the spec)"
    info = WeightsInfo(
        "smp" if state is not None else "smp (untrained)",
        spec,
        description,
        extra={
            "num_classes": classes,
            "normalization": "ImageNet (smp's pretrained encoders)",
            **({"file": shown_path(path), "sha256": backbones.file_sha256(path)} if path else {}),
        },
    )
    return net, info, (IMAGENET_MEAN, IMAGENET_STD)


def _module(spec: str, rest: str) -> tuple[nn.Module, WeightsInfo, Normalisation]:
    module_name, sep, attribute = rest.partition(":")
    if not sep or not module_name or not attribute:
        raise SpecError(f"model spec {spec!r}: module specs are module:PKG.MOD:CALLABLE")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(f"model spec {spec!r}: cannot import {module_name} ({exc})") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise SpecError(f"model spec {spec!r}: {module_name} has no {attribute}")
        target = getattr(target, part)
    if not callable(target):
        raise SpecError(f"model spec {spec!r}: {module_name}.{attribute} is not callable")
    built = target()
    if not isinstance(built, nn.Module):
        raise SpecError(
            f"model spec {spec!r}: {module_name}.{attribute}() returned {type(built).__name__}, not a torch.nn.Module"
        )
    if isinstance(built, SegmentationModel):  # the user's own normalisation
        net, mean, std = built.net, tuple(built.mean.flatten().tolist()), tuple(built.std.flatten().tolist())
        how = "the SegmentationModel's own"
    else:
        net, mean, std, how = built, IMAGENET_MEAN, IMAGENET_STD, "ImageNet"
    info = WeightsInfo(
        "module",
        spec,
        f"{module_name}.{attribute}() ({type(net).__name__})",
        extra={"num_classes": _class_count(net, mean, std), "normalization": how},
    )
    return net, info, (mean, std)


def _class_count(net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> int | None:
    """The channels of a probe pass's logits (in eval mode, state restored); None when the network
    refuses the probe's size."""
    from segattack.attacks._common import attack_mode

    probe = SegmentationModel(net, mean=mean, std=std)
    try:
        with attack_mode(probe), torch.no_grad():
            return int(probe(torch.rand(1, 3, PROBE, PROBE)).shape[1])
    except Exception:
        return None


def known_labels(spec: str) -> LabelSpace | None:
    """The classes a spec's model predicts when the spec alone says, with no weights loaded: VOC-21
    for the study backbones and torchvision's models, a local ``hf:`` directory's ``id2label``;
    None when only the loaded model can say (:func:`check_labels` then)."""
    if spec in BACKBONES or spec.startswith("torchvision:"):
        return VOC
    config = Path(spec[3:]) / "config.json"
    if spec.startswith("hf:") and config.is_file():
        id2label = typing.cast(dict[str, Any], _read_json(config, spec)).get("id2label")
        return from_id2label(id2label, f"{config.parent.name}'s id2label") if id2label and _named(id2label) else None
    return None


def _named(id2label: dict[Any, str]) -> bool:
    """Whether an id2label names its classes (transformers' default ``LABEL_i`` names none)."""
    return any(str(v) != f"LABEL_{k}" for k, v in id2label.items())


def check_weights(spec: str, weights: str) -> None:
    """Refuse ``weights`` other than ``"auto"`` for a spec that carries its own (hf:, smp:, module:), and
    other than ``"auto"``, ``"torchvision"`` or a checkpoint path for a ``torchvision:`` spec (the
    embedded weights exist for the study's two backbones only)."""
    kind = spec.partition(":")[0] if spec not in BACKBONES else "backbone"
    published = weights in ("auto", "torchvision")
    if kind == "torchvision" and not published and (weights in WEIGHT_SOURCES or not is_checkpoint_path(weights)):
        raise SpecError(
            f"weights={weights!r} does not apply to {spec}: use 'torchvision' (its published "
            f"COCO_WITH_VOC_LABELS_V1 weights) or a checkpoint path (.pt or .pth)"
        )
    if kind in ("hf", "smp", "module") and weights != "auto":
        raise SpecError(
            f"weights={weights!r} applies to the study's backbones and torchvision: specs; a {kind}: "
            f"spec names its own weights ({FORMS})"
        )
