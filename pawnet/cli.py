"""The `pawnet` command: a thin layer over the Python API (`pawnet.train`, `pawnet.load`).

Exit status: 0 done; 1 an unexpected failure; 2 bad usage or bad input, with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import traceback
from pathlib import Path

from .allocator import keep_freed_memory
from .atomic import make_parent
from .errors import DownloadError, Interrupted, UserError
from .version import __version__


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pawnet", description="Train and use CNN image classifiers.")
    p.add_argument("--version", action="version", version=f"pawnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _train_parser,
        _evaluate_parser,
        _predict_parser,
        _explain_parser,
        _export_parser,
        _serve_parser,
        _data_parser,
    ):
        add(sub)
    return p


def _train_parser(sub) -> None:
    t = sub.add_parser(
        "train",
        help="train a model on folders of photos (or continue one with --resume)",
        usage="pawnet train DATA [options] | pawnet train --resume RUN_DIR [--device D]",
    )
    t.add_argument(
        "data", metavar="DATA", nargs="?", help="class folders, training_set/ + test_set/, or cat.1.jpg-style names"
    )
    t.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint, with its settings"
    )
    t.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default="auto",
        help="auto: a CUDA GPU, else Apple's MPS, else the CPU",
    )
    t.add_argument("--out", metavar="DIR", help="model directory to write (default: runs/trainN)")
    t.add_argument("--json", action="store_true", help="print the final metrics as JSON (the log goes to stderr)")
    _run_settings(t)


def _run_settings(t) -> None:
    """The flags of `RunSettings`; None means "the architecture's default" (and lets --resume refuse them)."""
    t.add_argument("--val", metavar="DIR", help="validation folder (default: test_set/, else 20%% of DATA)")
    t.add_argument(
        "--arch",
        help=(
            "seed (the tutorial's network; the default), small (from scratch, any number of classes) "
            "or efficientnet_lite0 (pretrained)"
        ),
    )
    t.add_argument("--epochs", type=int, help="passes over the training photos (default: the architecture's)")
    t.add_argument(
        "--batch-size",
        type=int,
        help="photos per step, over all processes under torchrun (default: the architecture's)",
    )
    t.add_argument("--img-size", type=int, help="side of the square input in pixels (default: the architecture's)")
    t.add_argument(
        "--seed", type=int, help="random seed (default 0); the same seed repeats a run exactly on the same machine"
    )
    t.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16"],
        help=(
            "auto (the default): bfloat16 on GPUs and CPUs that have it in hardware, "
            "float16 on older GPUs, else float32"
        ),
    )
    t.add_argument(
        "--finetune",
        action="store_true",
        default=None,
        help="train every weight of a pretrained network (efficientnet_lite0), not a head on its frozen features: "
        "slower, for a GPU or time",
    )
    t.add_argument(
        "--no-cache",
        dest="use_cache",
        action="store_false",
        default=None,
        help="decode the photos again instead of reading the disk cache",
    )


SHIPPED = "default (the cats-vs-dogs model shipped with pawnet)"
MODEL_HELP = f"a model directory, an exported .onnx file, or {SHIPPED}"
# explain follows gradients and export starts from PyTorch: both need the model directory.
MODEL_DIR_HELP = f"a model directory or {SHIPPED}"


def _evaluate_parser(sub) -> None:
    e = sub.add_parser("evaluate", help="measure a model on a labelled folder")
    e.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    e.add_argument(
        "data", metavar="DATA", help="labelled photos in any layout train reads (test_set/ of the tutorial's)"
    )
    e.add_argument("--tta", action="store_true", help="average each photo with its mirror image")
    e.add_argument("--report", metavar="HTML", help="also write a self-contained HTML report, top losses included")
    e.add_argument("--no-cache", action="store_true", help="decode the photos again instead of reading the disk cache")
    e.add_argument(
        "--unknown",
        metavar="DIR",
        help="a folder of photos of none of the classes: also measure how well the model tells them apart",
    )
    e.add_argument("--json", action="store_true", help="print the results as one JSON object")
    _engine_flag(e)


def _predict_parser(sub) -> None:
    r = sub.add_parser(
        "predict",
        help="label photos",
        usage="pawnet predict [MODEL] PATH... [--tta] [--all-known] [--json] [--engine E]",
    )
    r.add_argument(
        "paths",
        metavar="[MODEL] PATH",
        nargs="+",
        help="a model directory, .onnx file or default (when left out: the cats-vs-dogs model shipped with "
        "pawnet), then image files or folders of them",
    )
    r.add_argument("--tta", action="store_true", help="average each photo with its mirror image")
    r.add_argument(
        "--all-known",
        action="store_true",
        help="give every photo one of the classes, even one that looks like none of them (no 'unknown')",
    )
    r.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    _engine_flag(r)


def _engine_flag(parser) -> None:
    parser.add_argument(
        "--engine",
        choices=["auto", "onnxruntime", "torch"],
        help="what runs a model directory: auto (default; onnxruntime on a CPU, several times as fast, "
        "exported once into the cache folder), onnxruntime or torch",
    )


def _explain_parser(sub) -> None:
    x = sub.add_parser("explain", help="where the network looked (Grad-CAM), or the tutorial's steps drawn")
    x.add_argument("model", metavar="MODEL", help=MODEL_DIR_HELP)
    x.add_argument("image", metavar="IMAGE", help="the photo to explain")
    x.add_argument(
        "--out", metavar="PNG", help="figure to write (default: runs/explain/IMAGE's name + _gradcam.png or _steps.png)"
    )
    x.add_argument("--steps", action="store_true", help="draw the photo's way through the tutorial's four steps")
    x.add_argument("--class", dest="class_name", metavar="NAME", help="explain this class instead of the predicted one")
    x.add_argument("--layer", metavar="NAME", help="feature layer to explain (default: the last convolutional one)")
    x.add_argument("--json", action="store_true", help="print the label, probabilities and figure as JSON")


def _export_parser(sub) -> None:
    o = sub.add_parser("export", help="a portable model (ONNX), checked against PyTorch")
    o.add_argument("model", metavar="MODEL", help=MODEL_DIR_HELP)
    o.add_argument("--format", choices=["onnx"], default="onnx", help="onnx (the only one)")
    o.add_argument("--out", metavar="FILE", help="default: MODEL/model.onnx (for default: runs/export/default.onnx)")
    o.add_argument("--quantize", action="store_true", help="compute in int8 (onnxruntime static quantization)")
    o.add_argument(
        "--calibrate",
        metavar="PHOTOS",
        help="with --quantize: photos like the model's (its training photos), for int8's ranges",
    )
    o.add_argument("--check", metavar="DATA", help="labelled folder to measure int8's accuracy change on")
    o.add_argument("--json", action="store_true", help="print what was written and checked as JSON")


def _serve_parser(sub) -> None:
    s = sub.add_parser("serve", help="a web page and an HTTP API for a model (FastAPI; docs at /docs)")
    s.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="model directory or .onnx file (default: the shipped cats-vs-dogs model)",
    )
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    s.add_argument("--token", help="require Authorization: Bearer TOKEN on /predict, /explain and /model")
    s.add_argument("--max-upload-mb", type=float, default=20, help="largest image file accepted (default: 20)")
    s.add_argument("--max-files", type=int, default=64, help="most images in one request (default: 64)")
    s.add_argument(
        "--max-request-mb",
        type=float,
        help="largest request body, counted as it arrives (default: max-upload-mb x max-files, capped at 64)",
    )
    s.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests whose Host header names NAME (repeatable; '*': any host)",
    )
    _engine_flag(s)


def _data_parser(sub) -> None:
    d = sub.add_parser("data", help="audit a data set, or fetch the public one")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    c = dsub.add_parser("check", help="unreadable files, wrong extensions, odd modes and sizes, duplicates, leakage")
    c.add_argument("data", metavar="DATA", help="the folder to check, in any layout train reads")
    c.add_argument(
        "--fix",
        action="store_true",
        help="move unreadable files and redundant copies (with --labels, the suspect photos too) to DATA.quarantine/",
    )
    c.add_argument(
        "--labels",
        action="store_true",
        help="also find photos whose label looks wrong or that show none of the classes (a pretrained network's "
        "out-of-sample predictions and confident learning)",
    )
    c.add_argument("--report", metavar="HTML", help="with --labels: write a review page of the suspect photos")
    c.add_argument("--no-cache", action="store_true", help="inspect every file again")
    c.add_argument("--json", action="store_true", help="print every finding, not just the summary")
    rs = dsub.add_parser("restore", help="put back what check --fix moved aside")
    rs.add_argument("data", metavar="DATA", help="the folder whose DATA.quarantine/ to empty back into it")
    dl = dsub.add_parser("download", help="fetch the Dogs vs. Cats photos (or any archive of class folders)")
    dl.add_argument("dest", metavar="DEST", nargs="?", default="datasets", help="folder to write (default: datasets)")
    dl.add_argument("--source", default="petimages", help="a known source (petimages) or a URL")
    dl.add_argument("--sha256", metavar="HEX", help="expected checksum of the archive")
    dl.add_argument("--split", type=float, default=0.2, help="fraction of each class for test_set/")
    dl.add_argument("--seed", type=int, default=0, help="random seed of the split (default 0)")


def _train(args) -> int:
    from .settings import RunSettings
    from .training import resume, train

    log = _carry_on_unread(sys.stderr if args.json else sys.stdout)
    # Settings left out take the architecture's defaults (and --resume refuses any given).
    given = {name: getattr(args, name) for name in RunSettings.names() if getattr(args, name) is not None}
    if args.resume:
        if given or args.out is not None:
            flags = [
                FLAGS.get(name, "--" + name.replace("_", "-")) for name in [*given, *(["out"] if args.out else [])]
            ]
            raise UserError(f"--resume continues with the run's own settings; drop {', '.join(flags)}")
        clf = resume(args.resume, device=args.device, log=log)
    elif args.data is None:
        raise UserError("name the DATA folder to train on (or --resume RUN_DIR)")
    else:
        clf = train(out=args.out, device=args.device, log=log, **given)
    if args.json and clf is not None:  # None: a finished run, under torchrun, on a process but the first
        print(json.dumps({"model": str(clf.path), **clf.config["metrics"]}, indent=2))
    return 0


FLAGS = {"data": "DATA", "use_cache": "--no-cache"}


def _carry_on_unread(stream):
    """A log of training's progress that, once nobody reads it (`| head` has its lines), goes on
    into nothing: the training does not stop for it."""

    def log(message: str) -> None:
        try:
            print(message, file=stream, flush=True)
        except BrokenPipeError:
            _unread(stream)

    return log


def _evaluate(args) -> int:
    from .loader import load

    _onnx_runs_on_onnxruntime(args.model, args.engine)
    model = load(args.model, args.engine)
    _said_once(model)
    result = model.evaluate(
        args.data, tta=args.tta, report=args.report, use_cache=not args.no_cache, unknown=args.unknown
    )
    if args.report:
        print(f"report written to {args.report}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['data']}: {result['n_images']} images, {result['n_skipped']} skipped")
    print(
        f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}   ECE {result['ece']:.4f}"
        + ("   (with TTA)" if args.tta else "")
    )
    if result["checks_unknown"]:
        print(
            f"known {result['known_share']:.2%} of the photos (the rest look like none of the classes); "
            f"accuracy on those {result['accuracy_known']:.4f}"
        )
    if "unknown_auroc" in result:
        print(
            f"{result['unknown_data']}: {result['unknown_called_unknown']:.2%} of {result['unknown_n_images']} "
            f"photos called unknown; AUROC {result['unknown_auroc']:.4f}"
            + (f" ({result['unknown_n_skipped']} unreadable, skipped)" if result["unknown_n_skipped"] else "")
        )
    width = max(len(c) for c in result["classes"]) + 2
    print(f"\n{'class':<{width}}precision  recall  f1      support")
    for name, m in result["per_class"].items():
        print(f"{name:<{width}}{m['precision']:<11.4f}{m['recall']:<8.4f}{m['f1']:<8.4f}{m['support']}")
    print(
        f"\nconfusion matrix (rows: true, columns: predicted)\n{'':<{width}}"
        + "".join(f"{c:>{width}}" for c in result["classes"])
    )
    for name, row in zip(result["classes"], result["confusion_matrix"]):
        print(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    for path, why in result["skipped"].items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    return 0


def _predict(args) -> int:
    from .loader import load

    model, paths = _model_and_paths(args.paths)
    if not paths:
        raise UserError(f"no images to predict: name image files or folders after the model {model}")
    _onnx_runs_on_onnxruntime(model, args.engine)
    predictor = load(model, args.engine)
    if not args.all_known:
        _said_once(predictor)
    results = predictor.predict(paths, tta=args.tta, all_known=args.all_known)
    if not results:
        raise UserError("no images found in " + " ".join(paths))
    failed = [r for r in results if "error" in r]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        width = max(len(r["path"]) for r in results) + 2
        for r in results:
            if "error" in r:
                print(f"{r['path']:<{width}}error: {r['error']}")
            elif r["known"]:
                print(f"{r['path']:<{width}}{r['label']}  {r['probability']:.2f}")
            else:
                print(f"{r['path']:<{width}}unknown  ({_why_unknown(r)})")
    if failed:
        print(f"pawnet: {len(failed)} of {len(results)} files could not be read", file=sys.stderr)
    return 2 if len(failed) == len(results) else 0


def _said_once(predictor) -> None:
    if not predictor.checks_unknown:
        print(
            f"note: {predictor.path} was trained before pawnet checked for photos of none of its classes: "
            "every photo is taken for one of them (train it again to add the check)",
            file=sys.stderr,
        )


def _why_unknown(row: dict) -> str:
    if "looks_like" in row:
        return f"looks like: {row['looks_like']}"
    return f"unlike the training photos: score {row['unknown_score']:.3f}"


def _onnx_runs_on_onnxruntime(model, engine: str | None) -> None:
    """`--engine torch` says how a model directory runs: an ONNX file has one way only, and
    running it there anyway would ignore what the user asked for."""
    if engine == "torch" and str(model).endswith(".onnx"):
        raise UserError(f"{model}: an ONNX file runs on onnxruntime; --engine torch is for a model directory")


def _model_and_paths(paths: list[str]) -> tuple[str | None, list[str]]:
    """`predict [MODEL] PATH...`: the first path is the model where it is one. Where it is not,
    and other paths follow, a first path that is no photo and holds none was meant as a model
    (a mistyped runs/seed): an error, rather than the shipped model's labels of the rest."""
    from .data import collect_images
    from .images import is_image_file
    from .loader import is_model

    first, rest = paths[0], paths[1:]
    if is_model(first):
        return first, rest
    if rest:
        path = Path(first)
        if not path.exists() and not is_image_file(path):
            raise UserError(f"{first}: no such model directory (or image)")
        if path.is_dir() and not collect_images([path]):
            raise UserError(f"{first}: not a model directory (no config.json), and it holds no images")
    return None, paths


def _explain(args) -> int:
    from .explanations import explain_figure
    from .loader import load

    summary = explain_figure(load(args.model, "torch"), args.image, args.out, args.steps, args.class_name, args.layer)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        figure = summary.get("heatmap") or summary["figure"]
        print(f"{args.image}  {summary['label']}  {max(summary['probabilities'].values()):.2f}  -> {figure}")
    return 0


def _export(args) -> int:
    from .onnx_export import export

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    # Only a file named .onnx: a slip of the finger must not write over a model's config or weights.
    if args.out is not None and Path(args.out).suffix != ".onnx" and not Path(args.out).is_dir():
        raise UserError(f"{args.out}: an ONNX model's file name ends in .onnx")
    if not args.quantize and (args.calibrate or args.check):
        print("note: --calibrate and --check are for --quantize; exporting float32 without them", file=sys.stderr)
    report = export(args.model, args.out, args.quantize, args.check, args.calibrate, log)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def _serve(args) -> int:
    from .server import serve

    _onnx_runs_on_onnxruntime(args.model, args.engine)
    serve(
        args.model,
        host=args.host,
        port=args.port,
        token=args.token,
        max_upload_mb=args.max_upload_mb,
        max_files=args.max_files,
        max_request_mb=args.max_request_mb,
        allow_hosts=args.allow_host,
        engine=args.engine,
    )
    return 0


def _data(args) -> int:
    if args.data_command == "download":
        from .download import download

        download(args.dest, args.source, args.sha256, args.split, args.seed)
        return 0
    from . import audit

    if args.data_command == "restore":
        restored = audit.restore(args.data)
        print(f"restored {len(restored)} files")
        return 0
    return _check(args)


def _check(args) -> int:
    from . import audit

    if args.report and not args.labels:
        raise UserError("--report writes the review page of the label check; add --labels")
    if args.report:
        make_parent(args.report)  # a folder that cannot be made fails now, not after the slow part
    report = audit.check(args.data, use_cache=not args.no_cache)
    labels = _check_labels(args) if args.labels else None
    moved = audit.fix(report) if args.fix else []
    if args.fix and labels:
        from .labels import fix_labels

        moved += fix_labels(labels)
    if args.json:
        extra = {"label_issues": labels["label_issues"], "label_check": _label_summary(labels)} if labels else {}
        print(json.dumps({**report, **extra, "moved": moved}, indent=2))
        return 0
    _print_check(report)
    if labels:
        _print_labels(labels, args.report)
    if args.fix:
        print(
            f"moved {len(moved)} files to {audit.quarantine_folder(Path(args.data))} "
            f"(pawnet data restore {args.data} puts them back)"
        )
        return 0
    if report["findings"]["unreadable"] or report["findings"]["exact_duplicates"]:
        print("pawnet data check --fix moves unreadable files and redundant copies aside")
    if labels and labels["label_issues"]:
        print("pawnet data check --labels --fix moves the suspect photos aside")
    return 0


def _check_labels(args) -> dict:
    from .labels import check_labels, write_review

    labels = check_labels(args.data, use_cache=not args.no_cache)
    if args.report:
        labels["review"] = str(write_review(labels, args.report))
    return labels


def _label_summary(labels: dict) -> dict:
    keys = ("classes", "n_checked", "skipped", "vectors_from_cache", "engine", "seconds", "review")
    return {k: labels[k] for k in keys if k in labels}


def _print_labels(labels: dict, review: str | None) -> None:
    issues = labels["label_issues"]
    skipped = f", {len(labels['skipped'])} unreadable skipped" if labels["skipped"] else ""
    print(
        f"label check: {labels['n_checked']} photos in {labels['seconds']:.1f}s "
        f"({labels['vectors_from_cache']} from the cache, {labels['engine']}{skipped}); {len(issues)} suspect"
    )
    for issue in issues:
        looks = "none of the classes" if issue["suggested"] is None else issue["suggested"]
        print(f"label       {issue['path']}: filed as {issue['given']}, looks like {looks} ({issue['score']:.2f})")
    if review:
        print(f"review page written to {review}")


def _print_check(report: dict) -> None:
    from . import audit
    from .progress import count

    print(
        f"{report['data']}: {report['n_images']} images checked in {report['seconds']:.1f}s "
        f"({report['images_per_second']:.0f} images/s)"
    )
    for split, counts in report["classes"].items():
        print(f"  {split}: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    if unreadable := report["summary"]["unreadable"]:
        print(f"  (readable images only: {count(unreadable, 'unreadable file')} not counted)")
    for line in report["warnings"]:
        print(f"warning: {line}")
    if report["class_balance"]:
        flag = "  (imbalanced: training weighs the classes)" if report["class_balance"] > 1.5 else ""
        print(f"  largest class / smallest: {report['class_balance']:.2f}{flag}")
    labels = {
        "unreadable": "unreadable files",
        "extension_mismatch": "extension does not match content",
        "not_rgb": "not RGB (grayscale, palette, CMYK, alpha, 16-bit)",
        "tiny": f"tiny (a side under {audit.TINY} px)",
        "huge": f"huge (over {audit.HUGE / 1e6:.0f} megapixels)",
        "exact_duplicate_groups": "groups of byte-identical files",
        "near_duplicate_pairs": f"near-duplicate pairs (perceptual hash within {report['near_duplicate_bits']} bits)",
        "conflicting_labels": "duplicates with different labels",
        "train_test_leaks": "duplicates across training and test sets (leakage)",
    }
    for key, text in labels.items():
        print(f"  {report['summary'][key]:>6}  {text}")
    findings = report["findings"]
    for u in findings["unreadable"]:
        print(f"unreadable  {u['path']}: {u['why']}")
    for m in findings["extension_mismatch"]:
        print(f"extension   {m['path']}: content is {m['format']}")
    for g in findings["exact_duplicates"]:
        print(f"identical   {' = '.join(g['files'])} ({', '.join(g['where'])})")
    for p in findings["near_duplicates"]:
        print(f"near        {' ~ '.join(p['files'])} ({p['kind']}, {p['bits']} bits, {p['where']})")


COMMANDS = {
    "data": _data,
    "train": _train,
    "evaluate": _evaluate,
    "predict": _predict,
    "explain": _explain,
    "export": _export,
    "serve": _serve,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse takes a list of positionals from one run of words only: photos named after an
    # option (`predict RUN --engine torch photo.jpg`) would be refused, though they mean one thing.
    if extra and isinstance(getattr(args, "paths", None), list) and not any(w.startswith("-") for w in extra):
        args.paths += extra
    elif extra:  # named alone: the words beside an unknown option may be photos
        parser.error(f"unrecognized arguments: {' '.join(w for w in extra if w.startswith('-')) or ' '.join(extra)}")
    # The command is the whole process, so it may set the allocator for all of it (a library
    # import may not): every network runs faster on a CPU with it (allocator.py).
    keep_freed_memory()
    try:
        if empty := _empty_path(args):
            # "" is what an unset shell variable gives ("$MODEL"); taken as a path it would be the
            # current folder, and predict would label every photo under it.
            raise UserError(f"{empty}: an empty path names no file or folder")
        if getattr(args, "token", None) == "":
            raise UserError("--token: empty, so no request could ever be let in")
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is seen below
        return status
    except UserError as e:
        print(f"pawnet: error: {e}", file=sys.stderr)
        return 2
    except DownloadError as e:
        print(f"pawnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print("pawnet: interrupted" + (f"; {e}" if isinstance(e, Interrupted) else ""), file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        # Whoever read the output (`| head`) has what they wanted; any other pipe that broke is a failure.
        return 0 if _unread(sys.stdout) else _unexpected(e)
    except Exception as e:  # a bug, not a user mistake: say so in one line unless asked for more
        return _unexpected(e)


# The arguments that name files or folders, as the usage names them.
PATH_ARGUMENTS = {
    "data": "DATA",
    "paths": "PATH",
    "model": "MODEL",
    "image": "IMAGE",
    "resume": "--resume",
    "out": "--out",
    "val": "--val",
    "report": "--report",
    "unknown": "--unknown",
    "check": "--check",
    "calibrate": "--calibrate",
    "dest": "DEST",
}


def _empty_path(args) -> str | None:
    for dest, name in PATH_ARGUMENTS.items():
        value = getattr(args, dest, None)
        if value == "" or (isinstance(value, list) and "" in value):
            return name
    return None


def _unread(stream) -> bool:
    """Whether nobody reads `stream` any more; if so, what is left for it goes nowhere."""
    try:
        stream.flush()
        gone = False
    except BrokenPipeError:
        gone = True
    if not gone and hasattr(select, "poll"):
        # The write that failed may have dropped what it held, so that flush succeeds on a pipe
        # whose reader is gone: the pipe itself says so (POLLERR on its writing end).
        poller = select.poll()
        poller.register(stream.fileno(), select.POLLOUT)
        gone = any(event & select.POLLERR for _, event in poller.poll(0))
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    return gone


def _unexpected(error: BaseException) -> int:
    if os.environ.get("PAWNET_DEBUG"):
        traceback.print_exception(error)
    print(
        f"pawnet: unexpected error: {type(error).__name__}: {error} (set PAWNET_DEBUG=1 for the traceback)",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
