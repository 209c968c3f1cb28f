"""report.html: one self-contained page about a model and its validation results.

Every image is inline (base64), so the file opens from disk with no network. Photos are small
JPEG thumbnails, which keeps a report on 1,000 validation photos well under 5 MB.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import write_text
from .explanations import overlay
from .images import ImageError, Preprocessing, load_pixels
from .plots import checks_figure
from .rundir import RunDir

THUMB = 160
TOP_LOSSES = 16


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _jpeg(pixels: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _table(rows: list[list], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _confusion(result: dict) -> str:
    classes = result["classes"]
    cm = np.asarray(result["confusion_matrix"])
    top = max(int(cm.max()), 1)
    cells = []
    for name, row in zip(classes, cm):
        tds = "".join(
            f'<td style="background: rgba(31, 119, 180, {v / top:.2f}); '
            f'color: {"#fff" if v > top / 2 else "#000"}">{v}</td>'
            for v in row
        )
        cells.append(f"<tr><th>{html.escape(name)}</th>{tds}</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in classes)
    return (
        f'<table class="cm"><thead><tr><th>true \\ predicted</th>{head}</tr></thead>'
        f"<tbody>{''.join(cells)}</tbody></table>"
    )


def _top_losses(clf, outcome, n: int = TOP_LOSSES) -> str:
    thumb_prep = Preprocessing(size=THUMB, resize=clf.preprocessing.resize)
    cards = []
    for i in np.argsort(-outcome.losses)[:n]:
        path = outcome.files[i]
        try:
            thumb = load_pixels(path, thumb_prep)
        except ImageError:
            continue
        cam = clf.grad_cam(np.asarray(outcome.pixels[i]))
        predicted = int(outcome.probabilities[i].argmax())
        truth = int(outcome.labels[i])
        cards.append(
            f'<figure><img src="{_jpeg(thumb)}" alt="{html.escape(path.name)}" width="{THUMB}" height="{THUMB}">'
            f'<img src="{_jpeg(overlay(thumb, cam.heatmap))}" alt="Grad-CAM of {html.escape(path.name)}" '
            f'width="{THUMB}" height="{THUMB}">'
            f"<figcaption><b>{html.escape(path.name)}</b><br>label {html.escape(clf.classes[truth])}, "
            f"predicted {html.escape(clf.classes[predicted])} ({outcome.probabilities[i][predicted]:.2f})<br>"
            f"loss {outcome.losses[i]:.2f}</figcaption></figure>"
        )
    return "".join(cards)


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } \
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }
table.cm td { text-align: center; min-width: 4em; }
.figures img { max-width: 100%; }
.losses { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; width: 330px; } figure img { margin-right: 4px; }
figcaption { font-size: 0.85em; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
"""


def write_report(clf, result: dict, outcome, path, curves: Path | None = None, title: str | None = None) -> Path:
    """Write the HTML report of `result` (from `evaluate`) and `outcome` (its per-image results);
    `curves` defaults to the model directory's learning curves."""
    config = clf.config
    title = title or f"pawnet report: {config['arch']} ({', '.join(clf.classes)})"
    if curves is None and clf.path:
        curves = RunDir(clf.path).curves
    data = config.get("data", {})
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        _results(result),
        _curves(curves),
        _checks(clf, outcome),
        _data(clf, data),
        _skipped({**data.get("skipped", {}), **result.get("skipped", {})}),
        _timing(config.get("metrics", {})),
        "<h2>Top losses</h2><p>The photos the model got most wrong, each beside where it looked (Grad-CAM).</p>",
        f'<div class="losses">{_top_losses(clf, outcome)}</div>',
        _settings(config),
    ]
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
    path = Path(path)
    write_text(path, page)
    return path


def _results(result: dict) -> str:
    where = f"<p>Evaluated on <code>{html.escape(result['data'])}</code>.</p>" if result.get("data") else ""
    per_class = [[c, m["precision"], m["recall"], m["f1"], m["support"]] for c, m in result["per_class"].items()]
    return (
        f"{where}<h2>Results</h2><p>accuracy <b>{result['accuracy']:.4f}</b>, loss {result['loss']:.4f}, "
        f"ECE {result['ece']:.4f}, "
        f"{result['n_images']} images, {result['n_skipped']} skipped{' (with TTA)' if result.get('tta') else ''}</p>"
        f"<h3>Confusion matrix</h3>{_confusion(result)}"
        f"<h3>Per class</h3>{_table(per_class, ['class', 'precision', 'recall', 'F1', 'support'])}"
    )


def _checks(clf, outcome) -> str:
    """The reliability diagram, and the unknown scores of the photos against the threshold."""
    png = io.BytesIO()
    checks_figure(outcome.probabilities, outcome.labels, outcome.scores, clf.threshold, png)
    unknown = (
        f" {int((outcome.scores > clf.threshold).sum())} of these photos look like none of the classes (right)."
        if outcome.scores is not None
        else " The model has no unknown-photo check (trained before pawnet had one)."
    )
    return (
        "<h2>Calibration and unknown photos</h2><p>How often the top label is right against the probability "
        f"the model gives it (temperature {clf.temperature:.3f}).{unknown}</p>"
        f'<div class="figures"><img src="{_data_uri(png.getvalue(), "image/png")}" alt="reliability diagram"></div>'
    )


def _curves(curves: Path | None) -> str:
    if not curves or not curves.is_file():
        return ""
    uri = _data_uri(curves.read_bytes(), "image/png")
    return f'<h2>Learning curves</h2><div class="figures"><img src="{uri}" alt="learning curves"></div>'


def _data(clf, data: dict) -> str:
    if not data:
        return ""
    rows = [[c, data.get("train_counts", {}).get(c, ""), data.get("val_counts", {}).get(c, "")] for c in clf.classes]
    section = (
        f"<h2>Data</h2><p>training data <code>{html.escape(str(data.get('train', '')))}</code>; validation: "
        f"{html.escape(str(data.get('validation', '')))}</p>"
        + _table(rows, ["class", "training images", "validation images"])
    )
    leakage = data.get("leakage", {})
    if leakage:
        n = leakage["exact_duplicates"]
        section += (
            f"<p>Leakage check: {n} validation images byte-identical to training images"
            + (
                " (validation accuracy reads high; <code>pawnet data check --fix</code> moves them aside)."
                if n
                else "."
            )
            + "</p>"
            + (_table(leakage["pairs"], ["validation image", "training image"]) if n else "")
        )
    return section


def _skipped(skipped: dict) -> str:
    return (
        "<h3>Skipped files</h3>" + _table([[p, why] for p, why in skipped.items()], ["file", "why"]) if skipped else ""
    )


def _timing(metrics: dict) -> str:
    if not metrics:
        return ""
    rows = [
        ["decoding", f"{metrics.get('decode_seconds', 0):.1f} s"],
        ["whole run", f"{metrics.get('seconds', 0):.1f} s"],
        ["best epoch", metrics.get("best_epoch", "")],
    ]
    return "<h2>Timing</h2>" + _table(rows, ["what", "value"])


def _settings(config: dict) -> str:
    keys = ("arch", "classes", "preprocessing", "augmentation", "training", "pawnet_version", "torch_version")
    return f"<h2>Settings</h2><pre>{html.escape(json.dumps({k: config.get(k) for k in keys}, indent=2))}</pre>"
