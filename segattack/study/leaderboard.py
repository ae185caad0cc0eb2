"""``segattack leaderboard``: evaluation records merged into one ranked table (HTML, Markdown or CSV).

Records are compared only under one protocol (attacks with their settings and iterations, norm,
radii, targeting, dataset, image count, resize, window, label map, break share, seed); records
made under different protocols are refused, naming what differs, unless ``mixed`` is asked for.
The table ranks models by worst-case robust mIoU at one radius.
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path

from segattack.engine.store import atomic_write_text
from segattack.study.evalrecord import EVALUATION_VERSION, Evaluation, read_evaluation
from segattack.util.params import ParameterError

FORMATS = (".html", ".md", ".csv")


@dataclass(frozen=True)
class Row:
    """One model's line: clean and worst-case robust scores at the chosen radius, each attack's mIoU."""

    rank: int
    model: str
    weights: str
    clean_miou: float | None
    clean_aacc: float | None
    robust_miou: float | None
    robust_aacc: float | None
    attacks: dict[str, float | None]  # each budget attack's robust mIoU at the radius
    unconverged: list[str]  # attacks whose objective was still moving at the radius


def find_records(paths: list[str | Path]) -> list[Path]:
    """The ``evaluation.json`` files named, or found in the folders named (``DIR/*/evaluation.json``
    and ``DIR/evaluation.json``); a path with none is refused."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            inside = sorted([*path.glob("evaluation.json"), *path.glob("*/evaluation.json")])
            if not inside:
                raise ParameterError(f"{path} holds no evaluation.json (nor do its sub-folders)")
            found += inside
        else:
            raise ParameterError(f"{path} is neither an evaluation.json nor a folder of them")
    return found


def check_protocols(records: list[Evaluation], mixed: bool = False) -> None:
    """Refuse records made under different protocols (unless ``mixed``), naming the fields that differ."""
    if not records:
        raise ParameterError("no evaluation records to compare")
    first = records[0]
    for other in records[1:]:
        diff = first.protocol.differences(other.protocol)
        if diff and not mixed:
            raise ParameterError(
                f"{first.model.spec} and {other.model.spec} were evaluated under different protocols "
                f"(they differ in {', '.join(diff)}); compare like with like, or pass --mixed"
            )


def rows(records: list[Evaluation], eps: float) -> list[Row]:
    """The ranked rows at radius ``eps`` (every record must hold it): by worst-case robust mIoU,
    highest first; a model without one last."""
    out = []
    for record in records:
        worst = record.worst_at(eps)
        attacks = {c.attack: c.scores.miou if c.scores else None for c in record.cells if c.eps == worst.eps}
        late = [c.attack for c in record.cells if c.eps == worst.eps and not c.converged]
        out.append(
            Row(
                0,
                record.model.spec,
                record.model.weights,
                record.clean.miou,
                record.clean.aacc,
                worst.scores.miou,
                worst.scores.aacc,
                attacks,
                late,
            )
        )
    out.sort(key=lambda r: -1.0 if r.robust_miou is None else r.robust_miou, reverse=True)
    return [Row(i + 1, *[getattr(r, f) for f in Row.__dataclass_fields__ if f != "rank"]) for i, r in enumerate(out)]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def table_cells(ranked: list[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the table (percent, two decimals; ``*`` marks an unconverged attack)."""
    attacks = list(dict.fromkeys(a for r in ranked for a in r.attacks))
    header = ["rank", "model", "weights", "clean mIoU", "clean aAcc", "robust mIoU", "robust aAcc", *attacks]
    body = [
        [
            str(r.rank),
            r.model,
            r.weights,
            _pct(r.clean_miou),
            _pct(r.clean_aacc),
            _pct(r.robust_miou),
            _pct(r.robust_aacc),
            *[_pct(r.attacks.get(a)) + ("*" if a in r.unconverged else "") for a in attacks],
        ]
        for r in ranked
    ]
    return header, body


def render(ranked: list[Row], fmt: str, caption: str) -> str:
    """The table as HTML, Markdown or CSV text."""
    header, body = table_cells(ranked)
    if fmt == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows(body)
        return buffer.getvalue()
    if fmt == ".md":
        lines = [caption, "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]
        return "\n".join(lines) + "\n"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>segattack leaderboard</title></head><body>'
        f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{cells}</tbody></table></body></html>\n"
    )


def leaderboard(paths: list[str | Path], out: str | Path, eps: float | None = None, mixed: bool = False) -> list[Row]:
    """Read the records under ``paths``, check their protocols, rank them at ``eps`` (None: the
    largest radius they share) and write the table to ``out`` in the format its extension names."""
    target = Path(out)
    if target.suffix not in FORMATS:
        raise ParameterError(f"--out must end in {', '.join(FORMATS)}, got {target.name}")
    records = [read_evaluation(p) for p in find_records(paths)]
    check_protocols(records, mixed)
    if eps is None:
        shared = set.intersection(*[{round(e, 12) for e in r.protocol.eps} for r in records])
        if not shared:
            raise ParameterError("the records share no radius; name one with --eps")
        eps = max(shared)
    try:
        ranked = rows(records, eps)
    except KeyError as exc:
        raise ParameterError(str(exc.args[0])) from None
    p = records[0].protocol
    caption = (
        f"Ranked by worst-case robust mIoU (%) at {p.norm} eps {eps:.6g}"
        + (f" = {eps * 255:.3g}/255" if p.norm == "linf" else "")
        + f" over "
        f"{', '.join(a.name for a in p.attacks)} ({p.attacks[0].steps} iterations), {p.images}, "
        f"{p.num_images} images; * an attack still converging; evaluation records v{EVALUATION_VERSION}"
        + (" (MIXED protocols)" if mixed else "")
    )
    atomic_write_text(target, render(ranked, target.suffix, caption))
    return ranked
