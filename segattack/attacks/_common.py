"""What every attack shares: the result record, the model guard, input checks and the NaN guard."""

from __future__ import annotations

import functools
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from segattack.data.classes import IGNORE_INDEX

from ..metrics import IMAGENET_STD, pixel_accuracy, predict_classes


@dataclass
class AttackResult:
    """What an attack returns. Tensors are detached; the inputs are never modified.

    ``adv``: (B,3,H,W) adversarial images. ``history``: per-iteration (steps, B) tensors, one per
    recorded quantity (``loss`` always; ``iou_target`` and ``step_size`` where the attack has them),
    each measured at the iterate *before* that iteration's update. ``params``: the resolved
    hyperparameters, so a result file says exactly what ran. ``pred``: (B,H,W) the model's
    prediction on ``adv``; ``success``: (B,) fraction of labelled pixels at the target (targeted)
    or away from the label (untargeted) in ``pred``. Both are empty in a partial result
    (:attr:`AttackDiverged.partial`), whose images the model was not run on.
    """

    adv: torch.Tensor
    history: dict[str, torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    pred: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    success: torch.Tensor = field(default_factory=lambda: torch.empty(0))

    @property
    def loss(self) -> torch.Tensor:
        return self.history["loss"]


class AttackDiverged(FloatingPointError):
    """The model produced NaN/inf logits or gradients; ``partial`` keeps the iterations already done."""

    def __init__(self, message: str, partial: AttackResult) -> None:
        super().__init__(message)
        self.partial = partial


def check_inputs(images: torch.Tensor, targets: torch.Tensor) -> None:
    """One clear error for each way a batch can be malformed."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a (B,3,H,W) torch tensor in [0,1], got {_type_name(images)}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be a (B,3,H,W) tensor, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0,1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or inf values")
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"images must lie in [0,1], got range [{images.min():.3f}, {images.max():.3f}]")
    if targets.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            f"target masks must be (B,H,W) = {(images.shape[0], *images.shape[2:])}, got {tuple(targets.shape)}"
        )
    bad = (targets < 0) | (targets > IGNORE_INDEX)  # ids past the model's classes: _CheckedModel says so
    if bad.any():
        raise ValueError(
            f"target masks hold class ids outside 0..{IGNORE_INDEX - 1} (and {IGNORE_INDEX} for ignore): "
            f"{sorted(set(targets[bad].unique().tolist()))[:5]}"
        )


def check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def input_std(model: nn.Module, like: torch.Tensor) -> torch.Tensor:
    """The (1,3,1,1) per-channel std the model normalises with (ImageNet's if it does not say)."""
    std = getattr(model, "std", None)
    if not isinstance(std, torch.Tensor):
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return std.to(like)


Rows = slice | torch.Tensor  # the active samples: every one (a slice, no copy) or their indices


class SampleTracker:
    """Per-sample bookkeeping of a batched attack, with early stopping.

    With ``stop_at`` set, a sample whose success reaches it leaves the batch: it costs no further
    forward/backward passes and keeps its current image, and its history repeats its last values.
    ``iterations`` counts each sample's forward/backward passes; the history is kept in ``dtype``.
    """

    def __init__(
        self,
        batch: int,
        device: torch.device,
        keys: Iterable[str],
        stop_at: float | None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if stop_at is not None and not 0 < stop_at <= 1:
            raise ValueError(f"adv_threshold must be in (0, 1] or None, got {stop_at}")
        self.stop_at = stop_at
        self.active = torch.ones(batch, dtype=torch.bool, device=device)
        self.iterations = torch.zeros(batch, dtype=torch.long, device=device)
        self.last = {k: torch.zeros(batch, device=device, dtype=dtype) for k in keys}
        self.history: dict[str, list[torch.Tensor]] = {k: [] for k in self.last}
        self._ids = torch.arange(batch, device=device)

    def rows(self) -> Rows | None:
        """The samples still attacked; None once every sample has stopped."""
        if self.stop_at is None or bool(self.active.all()):
            return slice(None)
        idx = self._ids[self.active]
        return idx if len(idx) else None

    def record(self, rows: Rows, **values: torch.Tensor) -> torch.Tensor:
        """Log this iteration's (rows,) values (``success`` among them); return the rows that stop now."""
        for key, value in values.items():
            self.last[key][rows] = value.detach().to(self.last[key])
            self.history[key].append(self.last[key].clone())
        self.iterations[rows] += 1
        success = values["success"]
        if self.stop_at is None:
            return torch.zeros_like(success, dtype=torch.bool)
        done = success >= self.stop_at
        self.active[self._ids[rows][done]] = False
        return done

    def stacked(self, steps: int) -> dict[str, torch.Tensor]:
        """(steps, B) history per key; a run that ended early repeats its last row."""
        out = {}
        for key, rows in self.history.items():
            out[key] = torch.stack(rows + [rows[-1]] * (steps - len(rows))) if rows else torch.empty(0, len(self._ids))
        return out


def _finite(t: torch.Tensor) -> bool:
    # One float32 sum is NaN/inf iff some element is (finite logits and gradients do not reach 3e38):
    # 20-30x cheaper than isfinite().all(), which writes a boolean per element.
    return bool(torch.isfinite(t.sum(dtype=torch.float32)))


def guard_finite(
    step: int,
    logits: torch.Tensor,
    grad: torch.Tensor | None,
    current: Callable[[], torch.Tensor] | torch.Tensor,
    tracker: SampleTracker,
    params: dict[str, Any],
) -> None:
    """Raise :class:`AttackDiverged` on NaN/inf logits or gradients, with the finished iterations
    and the current images (``current``, or what ``current()`` gives, built only then)."""
    what = "logits" if not _finite(logits) else ("gradients" if grad is not None and not _finite(grad) else None)
    if what is None:
        return
    adv = current() if callable(current) else current
    done = {k: torch.stack(v[:step]) if step else torch.empty(0, adv.shape[0]) for k, v in tracker.history.items()}
    raise AttackDiverged(
        f"the model produced non-finite {what} at iteration {step}; {step} finished iterations are kept in .partial",
        AttackResult(adv.detach(), done, params),
    )


def success_rate(pred: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """(B,) fraction of labelled pixels at the target (targeted) or off the label (untargeted)."""
    at_label = pixel_accuracy(pred, labels).float()
    return at_label if targeted else 1 - at_label


def finish(
    model: nn.Module,
    adv: torch.Tensor,
    labels: torch.Tensor,
    targeted: bool,
    tracker: SampleTracker,
    steps: int,
    params: dict[str, Any],
) -> AttackResult:
    """Package an attack's outcome: one inference pass gives the final prediction and success."""
    with torch.inference_mode():
        pred = predict_classes(model(adv))
    params["iterations"] = tracker.iterations.tolist()
    return AttackResult(
        adv.detach(), tracker.stacked(steps), params, pred.clone(), success_rate(pred, labels, targeted).clone()
    )


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Run the body with ``model`` in eval mode and its parameters frozen, then put back exactly what
    was there: every submodule's ``training`` flag, every parameter's ``requires_grad`` and every
    buffer (object and values), also when the body raises.

    Eval mode is what an attack on a deployed model means (batch norm on its running statistics,
    no dropout); frozen parameters keep autograd to the input gradient. A model that is not an
    ``nn.Module`` (a plain function) has no state to keep.
    """
    if not isinstance(model, nn.Module):
        yield
        return
    inference = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_inference()]
    if inference:
        raise ValueError(
            f"the model holds tensors made under torch.inference_mode() ({', '.join(inference[:3])}), "
            f"which autograd cannot differentiate through; build or load it outside inference mode"
        )
    modes = [(module, module.training) for module in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [
        (module, name, buf, buf.detach().clone())
        for module in model.modules()
        for name, buf in module.named_buffers(recurse=False)
    ]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for module, training in modes:
            module.training = training
        for p, requires_grad in flags:
            p.requires_grad_(requires_grad)
        with torch.no_grad():
            for module, name, buf, saved in buffers:
                setattr(module, name, buf)  # the very object, should the body have replaced it
                if not torch.equal(buf, saved):
                    buf.copy_(saved)


class _CheckedModel(nn.Module):
    """The model as an attack sees it: each output must be (B,C,H,W) logits at the input's
    resolution, with a channel for every class id in the labels. Attributes (``std``) read through."""

    def __init__(self, model: nn.Module, labels_name: str, max_label: int) -> None:
        super().__init__()
        self.inner = model
        self.labels_name, self.max_label = labels_name, max_label

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.inner(images)
        if not isinstance(out, torch.Tensor):
            hint = (
                f"a dict with keys {list(out)[:5]}: wrap the module with segattack.models.wrap_model, which "
                f"takes its 'out' entry"
                if isinstance(out, dict)
                else _type_name(out)
            )
            raise TypeError(f"the model returned {hint}; attacks need a (B,C,H,W) tensor of logits")
        want = (images.shape[0], *images.shape[2:])
        if out.dim() != 4 or (out.shape[0], *out.shape[2:]) != want:
            raise ValueError(
                f"the model's output has shape {tuple(out.shape)} for images {tuple(images.shape)}; "
                f"attacks need logits (B,C,H,W) = ({want[0]},C,{want[1]},{want[2]}) at the images' "
                f"resolution (upsample inside the model, as torchvision's DeepLabV3 does)"
            )
        if out.shape[1] <= self.max_label:
            raise ValueError(
                f"{self.labels_name} hold class id {self.max_label} but the model outputs "
                f"{out.shape[1]} classes (ids 0..{out.shape[1] - 1})"
            )
        return out

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


def as_labels(labels: Any, name: str) -> torch.Tensor:
    """``labels`` as an int64 tensor of class ids: other integer dtypes (uint8 masks from PIL) are
    widened; anything else (numpy arrays, floats, booleans) is refused with a message naming it."""
    if not isinstance(labels, torch.Tensor):
        hint = " (convert with torch.from_numpy(array).long())" if type(labels).__module__ == "numpy" else ""
        raise TypeError(f"{name} must be a (B,H,W) torch tensor of integer class ids, got {_type_name(labels)}{hint}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class ids, got dtype {str(labels.dtype).replace('torch.', '')}")
    return labels.long()


def _number_arguments(function: Callable[..., Any]) -> dict[str, tuple[type, bool]]:
    """Parameters annotated ``int`` or ``float`` (or either ``| None``): name -> (type, None allowed)."""
    kinds = {}
    for name, hint in typing.get_type_hints(function).items():
        options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        numbers_only = [t for t in options if t is not type(None)]
        if numbers_only in ([int], [float]):
            kinds[name] = (numbers_only[0], type(None) in options)
    return kinds


def check_number(name: str, value: Any, kind: type, optional: bool) -> None:
    """A number parameter that is no number (a string from a config file, a bool) named in one message."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
        what = "an integer" if kind is int else "a number"
        raise TypeError(f"{name} must be {what}{' or None' if optional else ''}, got {value!r} ({_type_name(value)})")


Attack = TypeVar("Attack", bound=Callable[..., AttackResult])


def guarded(attack: Attack) -> Attack:
    """Decorate a public attack ``attack(model, images, labels, ...)``: it runs under
    :func:`attack_mode` (eval mode, frozen parameters, everything restored), with autograd on even
    inside ``torch.no_grad()`` or ``torch.inference_mode()`` (inputs made there are cloned into
    ordinary tensors), labels as int64 (:func:`as_labels`), its ``int``/``float`` parameters
    checked to be numbers (:func:`check_number`) and the model's outputs checked
    (:class:`_CheckedModel`); so an evaluation loop can call it as it is."""
    signature = inspect.signature(attack)
    model_arg, images_arg, labels_arg = list(signature.parameters)[:3]
    number_arguments = _number_arguments(attack)

    @functools.wraps(attack)
    def run(*args: Any, **kwargs: Any) -> AttackResult:
        bound = signature.bind(*args, **kwargs)
        for name, (kind, optional) in number_arguments.items():
            if name in bound.arguments:
                check_number(name, bound.arguments[name], kind, optional)
        model, images = bound.arguments[model_arg], bound.arguments[images_arg]
        with torch.inference_mode(False), torch.enable_grad(), attack_mode(model):
            if isinstance(images, torch.Tensor) and images.is_inference():
                images = images.clone()
            labels = as_labels(bound.arguments[labels_arg], labels_arg)
            labels = labels.clone() if labels.is_inference() else labels
            known = labels[labels != IGNORE_INDEX]
            max_label = int(known.max()) if known.numel() else -1
            bound.arguments[images_arg], bound.arguments[labels_arg] = images, labels
            if isinstance(model, nn.Module) and not isinstance(model, _CheckedModel):
                bound.arguments[model_arg] = _CheckedModel(model, labels_arg, max_label)
            return attack(*bound.args, **bound.kwargs)

    return run  # type: ignore[return-value]
