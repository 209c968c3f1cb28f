"""`pawnet data check DATA --labels`: the photos whose label looks wrong, or that show none of the classes.

Every photo gets a prediction from a model that never saw it. The pretrained EfficientNet-Lite0
body turns each photo into a vector once (kept on disk, so a second check is quick); then, in
five folds, a logistic-regression head trained on four fifths of the photos predicts the fifth.
A head fitted to mislabelled photos learns some of their mistakes, so it is fitted twice, the
second time without the photos the first fit doubted; and its answer is averaged with the vote
of each photo's 20 nearest neighbours, which a few wrong labels nearby barely move.

Confident learning (Northcutt et al., the method of cleanlab's `find_label_issues`) then decides
which labels to doubt. A class's threshold is the average probability the predictions give it
over the photos filed under it; a photo counts towards "filed under i, really j" when j is the
most probable of the classes it clears the threshold of. Those counts, scaled to the number of
photos in each class, estimate how many photos of each class belong to each other one, and that
many are flagged: those with the largest margin of j over i. So are the photos whose own label
gets under LEAST_LIKELY, which confident learning undercounts (`doubted`).

A photo of none of the classes lies outside what the others span: its unknown-photo score
(`unknown.UnknownCheck`, fitted in folds on the other photos) stands far above the rest, more
than `UNKNOWN_Z` robust standard deviations above their median. Measured figures: docs/data.md.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import make_parent, replacing, write_text
from .audit import label_record, labelled_files, quarantine
from .cache import cache_dir, cpu_count, stamp
from .data import check_folder
from .errors import UserError
from .images import ImageError, Preprocessing, load_pixels
from .progress import bar

FOLDS = 5
NEIGHBOURS = 20
WEIGHT_DECAY = 1e-2  # on unit-length, centred vectors scaled to unit variance per dimension
UNKNOWN_Z = 4.0
# Principal directions the unknown-photo score keeps: on the shared photos 64 let 6% of not-pets/
# pass for pets among 3,000 cats and dogs where 32 let 12% pass, with the same 4 photos flagged.
UNKNOWN_DIMS = 64
LEAST_LIKELY = 0.2
# The head reads the vectors' 256 principal directions: measured on the planted photos, the same
# findings as from all 1,280 numbers, in a quarter of the time.
HEAD_DIMS = 256
BODY = "efficientnet_lite0"
PREP = Preprocessing(size=256, mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0))
FEATURES_VERSION = 1  # raised when the vectors of a photo change: older stores are not reused
BATCH = 8  # onnxruntime's fastest batch for this body on 2 cores


@dataclass
class Finding:
    index: int
    suggested: int | None  # None: none of the classes
    score: float


def check_labels(data, use_cache: bool = True) -> dict:
    """Check every label in DATA (any layout `pawnet train` reads); returns the findings under
    "label_issues", most certain first, with what was checked and skipped."""
    root = check_folder(data)
    start = time.perf_counter()
    entries = [(f, c) for f, _, c in labelled_files(root)[0] if c is not None]
    classes = sorted({c for _, c in entries})
    if len(classes) < 2:
        raise UserError(f"{root}: the label check needs at least two classes; found {len(classes)}")
    given = np.array([classes.index(c) for _, c in entries], dtype=np.int64)
    _refuse_small_classes(root, classes, given, "photos")  # before the slow part
    vectors, errors, reused, engine = _vectors([f for f, _ in entries], root, use_cache)
    vector_seconds = time.perf_counter() - start
    ok = [i for i in range(len(entries)) if i not in errors]
    labels = given[ok]
    _refuse_small_classes(root, classes, labels, "readable photos")
    findings = find_issues(vectors, labels, len(classes))
    issues = [
        {
            "path": str(entries[ok[f.index]][0]),
            "given": classes[labels[f.index]],
            "suggested": None if f.suggested is None else classes[f.suggested],
            "score": round(f.score, 4),
        }
        for f in findings
    ]
    result = {
        "data": str(root),
        "classes": classes,
        "n_checked": len(ok),
        "skipped": {str(entries[i][0]): why for i, why in errors.items()},
        "vectors_from_cache": reused,
        "engine": engine,
        "seconds": round(time.perf_counter() - start, 2),
        "vector_seconds": round(vector_seconds, 2),  # listing, decoding and the network; the rest is the findings
        "label_issues": issues,
    }
    if use_cache:
        _record(root, result)
    return result


def _refuse_small_classes(root: Path, classes: list[str], labels: np.ndarray, what: str) -> None:
    counts = np.bincount(labels, minlength=len(classes))
    small = [f"{c} ({n})" for c, n in zip(classes, counts) if n < FOLDS]
    if small:
        raise UserError(
            f"{root}: too few {what} in {', '.join(small)}; the label check predicts each photo "
            f"from the others in {FOLDS} folds, so it needs at least {FOLDS} per class"
        )


def _record(root: Path, result: dict) -> None:
    """The findings, for `pawnet train` to warn about before its first epoch."""
    with contextlib.suppress(OSError):  # a read-only cache folder costs only the warning
        write_text(label_record(root), json.dumps({"data": result["data"], "label_issues": result["label_issues"]}))


# The findings, from vectors and labels alone.


def find_issues(vectors: np.ndarray, labels: np.ndarray, n_classes: int, seed: int = 0) -> list[Finding]:
    """Photos of none of the classes, then photos whose label looks wrong, most certain first.

    `score`: for a wrong label, the out-of-sample probability of the suggested class; for none
    of the classes, 1 / (1 + e^-(z - UNKNOWN_Z)) of its robust z-score, so 0.5 at the threshold.
    """
    import torch

    threads = torch.get_num_threads()
    # The matrices are small: a second thread gains little, and where the cores are busy
    # (another job, onnxruntime's threads winding down) threads waiting on each other cost
    # ten times over (measured: an SVD of 3,000 vectors, 2 s on one thread, 30 s on two).
    torch.set_num_threads(1)
    try:
        x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        copies = copies_of(vectors)
        z = unknown_z(x, copies=copies)
        outside = z > UNKNOWN_Z
        findings = [Finding(int(i), None, float(1 / (1 + np.exp(UNKNOWN_Z - z[i])))) for i in np.flatnonzero(outside)]
        inside = np.flatnonzero(~outside)
        probs = out_of_sample(
            _standardise(x[inside]), torch.from_numpy(labels[inside]), n_classes, seed, copies[inside]
        )
    finally:
        torch.set_num_threads(threads)
    for i, suggested in doubted(probs, labels[inside]):
        findings.append(Finding(int(inside[i]), int(suggested), float(probs[i, suggested])))
    return sorted(findings, key=lambda f: -f.score)


def copies_of(vectors: np.ndarray) -> np.ndarray:
    """A number per photo, the same for photos with the same vector: copies of one photo (the
    network computes each photo of a batch alike, so byte copies give equal vectors)."""
    return np.unique(np.asarray(vectors), axis=0, return_inverse=True)[1].reshape(-1)


def unknown_z(x, seed: int = 0, copies: np.ndarray | None = None) -> np.ndarray:
    """Each photo's unknown-photo score (`UnknownCheck`, fitted in FOLDS folds on the photos of
    the others, so that an odd photo does not make room for itself) in robust standard
    deviations (1.4826 median absolute deviations) above the median: a few photos of something
    else stand far out, where a quantile would flag a fixed share of every data set."""
    import torch

    from .unknown import UnknownCheck

    unit = torch.nn.functional.normalize(x, dim=1)
    folds = torch.from_numpy(folds_of(np.zeros(len(x), dtype=np.int64), FOLDS, seed, copies))
    scores = np.zeros(len(x))
    for f in range(FOLDS):
        train, held_out = unit[folds != f], folds == f
        mean = train.mean(0)
        centred = train - mean
        dims = max(1, min(UNKNOWN_DIMS, len(train) - 1, x.shape[1] // 4))
        # The principal directions UnknownCheck.fit finds, from the D x D covariance rather
        # than an SVD of all N vectors: the same directions at a fraction of the cost.
        basis = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -dims:]
        scores[held_out.numpy()] = UnknownCheck(mean.numpy(), basis.numpy(), 0.0).scores(x[held_out].numpy())
    median = np.median(scores)
    spread = 1.4826 * np.median(np.abs(scores - median))
    return (scores - median) / max(spread, 1e-12)


def _standardise(x):
    """Unit length, centred, scaled to unit variance per dimension on average, and turned onto
    its HEAD_DIMS principal directions."""
    import torch

    unit = torch.nn.functional.normalize(x, dim=1)
    centred = (unit - unit.mean(0)) * unit.shape[1] ** 0.5
    if x.shape[1] <= HEAD_DIMS:
        return centred
    directions = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -HEAD_DIMS:]
    return centred @ directions


def folds_of(labels: np.ndarray, k: int = FOLDS, seed: int = 0, copies: np.ndarray | None = None) -> np.ndarray:
    """Each photo's fold, each class spread evenly over the folds. Copies of one photo (`copies`,
    as `copies_of` numbers them) share a fold: a photo judged by its own copy looks ordinary
    whatever it shows, and where copies are many, every other photo would then look odd."""
    rng = np.random.default_rng(seed)
    groups = np.arange(len(labels)) if copies is None else np.asarray(copies)
    _, first, group = np.unique(groups, return_index=True, return_inverse=True)
    group_labels = labels[first]
    folds = np.empty(len(first), dtype=np.int64)
    for c in np.unique(group_labels):
        idx = np.flatnonzero(group_labels == c)
        rng.shuffle(idx)
        folds[idx] = np.arange(len(idx)) % k
    return folds[group.reshape(-1)]


def out_of_sample(x, labels, n_classes: int, seed: int = 0, copies: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities for every photo from models that never saw it: the logistic head's,
    fitted again without the photos its first fit doubted, averaged with the neighbours' vote."""
    import torch

    folds = torch.from_numpy(folds_of(labels.numpy(), FOLDS, seed, copies))
    first = _cross_validated(x, labels, n_classes, folds, torch.ones(len(labels), dtype=torch.bool))
    trusted = first[torch.arange(len(labels)), labels] >= 0.5
    second = _cross_validated(x, labels, n_classes, folds, trusted)
    return ((second + neighbour_vote(x, labels, n_classes)) / 2).numpy()


def _cross_validated(x, labels, n_classes, folds, trusted):
    import torch

    probs = torch.zeros((len(labels), n_classes))
    for f in range(FOLDS):
        train = (folds != f) & trusted
        held_out = folds == f
        probs[held_out] = logistic(x[train], labels[train], n_classes, x[held_out])
    return probs


def logistic(x, y, n_classes: int, x_test):
    """Multinomial logistic regression with an L2 penalty, fitted by L-BFGS; test probabilities."""
    import torch

    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=100, history_size=10, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ w + b, y) + WEIGHT_DECAY * (w * w).sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        return torch.softmax(x_test @ w + b, 1)


def neighbour_vote(x, labels, n_classes: int, block: int = 1024):
    """The share of each photo's nearest neighbours (cosine; itself left out) in each class."""
    import torch

    unit = torch.nn.functional.normalize(x, dim=1)
    k = min(NEIGHBOURS, len(x) - 1)
    votes = torch.zeros((len(x), n_classes))
    for start in range(0, len(x), block):  # blocks keep memory at block x N
        sim = unit[start : start + block] @ unit.T
        rows = torch.arange(len(sim))
        sim[rows, rows + start] = -float("inf")
        nearest = labels[sim.topk(k, dim=1).indices]
        for c in range(n_classes):
            votes[start : start + block, c] = (nearest == c).float().mean(1)
    return votes


def doubted(probs: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """(photo, suggested class) for each photo whose label to doubt: those confident learning
    picks, and those whose label gets less than LEAST_LIKELY from models that never saw it.

    Confident learning alone found 72 to 77 of the benchmark's 80 planted photos, this 77 to 79
    (docs/data.md): it counts a flipped photo only where the probability of its true class clears
    that class's threshold, and flipped photos, among training photos like them filed under the
    other class, clear it less often than the rest, so it undercounts them."""
    picked = dict(confident_learning(probs, labels))
    unlikely = probs[np.arange(len(labels)), labels] < LEAST_LIKELY
    for i in np.flatnonzero(unlikely):
        picked.setdefault(int(i), int(np.argmax(np.where(np.arange(probs.shape[1]) == labels[i], -1, probs[i]))))
    return sorted(picked.items())


def confident_learning(probs: np.ndarray, labels: np.ndarray) -> list[tuple[int, int]]:
    """(photo, suggested class) for the photos whose label to doubt: confident learning's
    confident joint, calibrated to the class counts, pruned by the noise rate (module docstring)."""
    n_classes = probs.shape[1]
    # A class with no photos here (all of them called none of the classes) doubts nobody into it.
    thresholds = np.array([probs[labels == c, c].mean() if (labels == c).any() else np.inf for c in range(n_classes)])
    above = probs >= thresholds
    confident = np.where(above, probs, -1).argmax(1)
    counted = above.any(1)
    joint = np.zeros((n_classes, n_classes))
    np.add.at(joint, (labels[counted], confident[counted]), 1)
    per_class = np.bincount(labels, minlength=n_classes)
    calibrated = joint / np.maximum(joint.sum(1, keepdims=True), 1) * per_class[:, None]
    flagged: dict[int, int] = {}
    for given in range(n_classes):
        filed = np.flatnonzero(labels == given)
        for other in range(n_classes):
            n = int(round(calibrated[given, other])) if other != given else 0
            margin = probs[filed, other] - probs[filed, given]
            for i in filed[np.argsort(-margin)[:n]]:
                if probs[i, other] > probs[i, given] and probs[i, other] > probs[i, flagged.get(i, given)]:
                    flagged[i] = other
    return sorted(flagged.items())


# Vectors: the pretrained body's, for every photo, kept on disk between checks.


def _vectors(files: list[Path], root: Path, use_cache: bool) -> tuple[np.ndarray, dict[int, str], int, str]:
    """The body's vector of each readable file, in order; why each other file was skipped (by
    index); how many vectors came from the store; and what computed the others."""
    store = _Store.load(root) if use_cache else _Store.empty()
    stamps = [stamp(f) for f in files]  # None for one gone since it was listed: reading it says why
    todo = [i for i, f in enumerate(files) if store.get(f, stamps[i]) is None]
    computed, errors, engine = _embed_files([files[i] for i in todo])
    errors = {todo[i]: why for i, why in errors.items()}
    fresh = dict(zip((i for i in todo if i not in errors), computed))
    readable = [i for i in range(len(files)) if i not in errors]
    rows = [fresh[i] if i in fresh else store.get(files[i], stamps[i]) for i in readable]
    vectors = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    if use_cache and todo:
        kept = [(row, i) for row, i in enumerate(readable) if stamps[i] is not None]
        _Store([str(files[i]) for _, i in kept], [stamps[i] for _, i in kept], vectors[[row for row, _ in kept]]).save(
            root
        )
    return vectors, errors, len(files) - len(todo), engine


@dataclass
class _Store:
    """Vectors by path and stamp (`cache.stamp`): a photo changed or added is computed again,
    the others are read back."""

    paths: list[str]
    stamps: list[list[int]]
    vectors: np.ndarray

    def __post_init__(self):
        self._index = {p: i for i, p in enumerate(self.paths)}

    @classmethod
    def empty(cls) -> _Store:
        return cls([], [], np.zeros((0, 0), np.float32))

    @staticmethod
    def path(root: Path) -> Path:
        return label_record(root).with_suffix(".npz")

    @classmethod
    def load(cls, root: Path) -> _Store:
        try:
            with np.load(cls.path(root)) as z:
                if int(z["version"]) != FEATURES_VERSION:
                    return cls.empty()
                return cls(z["paths"].tolist(), z["stamps"].tolist(), z["vectors"])
        except (OSError, ValueError, KeyError):
            return cls.empty()

    def get(self, path: Path, file_stamp) -> np.ndarray | None:
        i = self._index.get(str(path))
        return self.vectors[i] if i is not None and file_stamp is not None and self.stamps[i] == file_stamp else None

    def save(self, root: Path) -> None:
        try:
            self.path(root).parent.mkdir(parents=True, exist_ok=True)
            with replacing(self.path(root)) as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    version=FEATURES_VERSION,
                    paths=np.array(self.paths, dtype=str),
                    stamps=np.array(self.stamps, dtype=np.int64).reshape(-1, 4),
                    vectors=self.vectors.astype(np.float32),
                )
        except OSError:
            pass  # a read-only or full cache folder only costs the next check its speed


def _embed_files(files: list[Path], chunk: int = 64) -> tuple[list[np.ndarray], dict[int, str], str]:
    """The body's vectors of the readable files, why the others could not be read (by index),
    and what computed them. Decoding runs on all cores (Pillow lets go of the GIL), a chunk at a
    time, so memory stays flat."""
    if not files:
        return [], {}, "none needed"
    embed, engine = _embedder()
    out, errors = [], {}
    with ThreadPoolExecutor(cpu_count()) as pool, bar(total=len(files), desc="label check") as progress:
        for first in range(0, len(files), chunk):
            pixels = []
            for i, result in enumerate(pool.map(_decode, files[first : first + chunk]), start=first):
                if isinstance(result, str):
                    errors[i] = result
                else:
                    pixels.append(result)
            for start in range(0, len(pixels), BATCH):
                out.extend(embed(np.stack(pixels[start : start + BATCH])))
            progress.update(min(chunk, len(files) - first))
    return out, errors, engine


def _decode(path: Path):
    try:
        return load_pixels(path, PREP)
    except ImageError as e:
        return str(e)


def _network():
    """EfficientNet-Lite0 with its ImageNet weights, batch norm folded in for inference."""
    from .architectures import build

    return build(BODY, 2, PREP, pretrained=True).fused()


def body_path() -> Path | None:
    """The body exported to ONNX in the cache folder, exported on first use (about 15 s);
    None where it cannot be, and PyTorch runs the body instead."""
    import torch

    from .onnx_export import export_body
    from .version import __version__

    path = cache_dir() / f"label-body-{BODY}-{PREP.size}-pawnet{__version__}-torch{torch.__version__}.onnx"
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export_body(_network(), PREP.size, path)
    except Exception:  # no exporter, a read-only cache folder, an exporter that fails its parity check
        return None
    return path


def _embedder():
    """A function from uint8 pixels (N, size, size, 3) to the body's vectors, and its name:
    onnxruntime on a CPU (three times PyTorch's speed there), PyTorch on a GPU or where no
    exported body can be made."""
    import torch

    from .models import to_input

    if not torch.cuda.is_available() and (path := body_path()) is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Threads that spin while they wait for work keep a busy machine's cores from the
        # others: measured with another job on 2 cores, 31 photos/s spinning, 50 without.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda px: session.run(None, {"pixels": px.transpose(0, 3, 1, 2).astype(np.float32)})[0], "onnxruntime"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _network().to(device, memory_format=torch.channels_last)

    def embed(px):
        with torch.no_grad():
            return model.embed(to_input(px, device)).float().cpu().numpy()

    return embed, f"pytorch ({device.type})"


# What a person does with the findings: look at them, move them aside.


def fix_labels(result: dict) -> list[dict]:
    """Move the photos `check_labels` found to DATA.quarantine/, each with its given and
    suggested label in the manifest; `pawnet data restore DATA` (`audit.restore`) puts them back."""
    moves, details = [], {}
    for issue in result["label_issues"]:
        moves.append((issue["path"], _why(issue)))
        details[issue["path"]] = {k: issue[k] for k in ("given", "suggested", "score")}
    return quarantine(result["data"], moves, details)


def _why(issue: dict) -> str:
    looks = "none of the classes" if issue["suggested"] is None else issue["suggested"]
    return f"label check: filed as {issue['given']}, looks like {looks} (score {issue['score']:.2f})"


THUMB = 180

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
figure { margin: 0; border: 1px solid #ddd; border-radius: 6px; padding: 8px; background: #fafafa; }
figure img { display: block; margin: 0 auto 6px; max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; line-height: 1.35; overflow-wrap: anywhere; }
.rank { color: #888; } .given { color: #b00; } .suggested { color: #070; } .none { color: #a60; }
.unreadable { height: 120px; display: flex; align-items: center; justify-content: center; color: #888; }
code { background: #f0f0f0; padding: 0 0.2em; }
"""


def write_review(result: dict, path) -> Path:
    """One self-contained HTML page of the findings, most certain first: each photo's thumbnail
    (an inline JPEG), where it is filed, what it looks like, and the score."""
    path = make_parent(path)
    issues = result["label_issues"]
    with ThreadPoolExecutor(cpu_count()) as pool:
        thumbs = list(pool.map(_thumbnail, [Path(i["path"]) for i in issues]))
    data = html.escape(result["data"])
    cards = "".join(_card(n, issue, thumb) for n, (issue, thumb) in enumerate(zip(issues, thumbs), start=1))
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Label review: {data}</title><style>{STYLE}</style></head><body>"
        f"<h1>Label review</h1><p><code>{data}</code>: {result['n_checked']} photos checked, "
        f"<b>{len(issues)}</b> whose label looks wrong or that show none of the classes, most certain first. "
        f"<code>pawnet data check {data} --labels --fix</code> moves them to the quarantine folder, and "
        f"<code>pawnet data restore {data}</code> puts them back.</p>"
        f'<div class="grid">{cards}</div></body></html>'
    )
    write_text(path, page)
    return path


def _card(rank: int, issue: dict, thumb: str | None) -> str:
    name = html.escape(Path(issue["path"]).name)
    image = f'<img src="{thumb}" alt="{name}">' if thumb else '<div class="unreadable">could not be read</div>'
    looks = (
        '<span class="none">none of the classes</span>'
        if issue["suggested"] is None
        else f'<span class="suggested">{html.escape(issue["suggested"])}</span>'
    )
    return (
        f'<figure title="{html.escape(issue["path"])}">{image}<figcaption><span class="rank">#{rank}</span> '
        f'<b>{name}</b><br>filed as <span class="given">{html.escape(issue["given"])}</span>, looks like {looks}'
        f"<br>score {issue['score']:.2f}</figcaption></figure>"
    )


def _thumbnail(path: Path) -> str | None:
    """A small JPEG of the photo, aspect kept, as a data URI; None where it cannot be read."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as img:
            img.draft("RGB", (THUMB, THUMB))
            small = ImageOps.exif_transpose(img).convert("RGB")
            small.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=75)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
