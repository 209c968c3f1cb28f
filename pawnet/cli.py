"""The `pawnet` command: a thin layer over the Python API (`pawnet.train`, `pawnet.load`).

Exit status: 0 done; 1 an unexpected failure; 2 bad usage or bad input, with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from . import __version__
from .errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pawnet", description="Train and use CNN image classifiers.")
    p.add_argument("--version", action="version", version=f"pawnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model on folders of photos")
    t.add_argument("data", metavar="DATA", help="class folders, training_set/ + test_set/, or cat.1.jpg-style names")
    t.add_argument("--val", metavar="DIR", help="validation folder (default: test_set/, else 20%% of DATA)")
    t.add_argument("--arch", default="seed", help="network: seed (the tutorial's)")
    t.add_argument("--epochs", type=int, help="passes over the training photos (default: the architecture's)")
    t.add_argument("--batch-size", type=int, help="photos per step (default: the architecture's)")
    t.add_argument("--img-size", type=int, help="side of the square input in pixels (default: the architecture's)")
    t.add_argument("--seed", type=int, default=0, help="random seed; the same seed repeats a CPU run exactly")
    t.add_argument("--out", metavar="DIR", help="model directory to write (default: runs/trainN)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bfloat16 where the CPU computes it in hardware, else float32")
    t.add_argument("--no-cache", action="store_true", help="decode the photos again instead of reading the disk cache")
    t.add_argument("--json", action="store_true", help="print the final metrics as JSON (the log goes to stderr)")

    e = sub.add_parser("evaluate", help="measure a model on a labelled folder")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("data", metavar="DATA")
    e.add_argument("--tta", action="store_true", help="average each photo with its mirror image")
    e.add_argument("--json", action="store_true")

    r = sub.add_parser("predict", help="label photos")
    r.add_argument("model", metavar="MODEL")
    r.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders of them")
    r.add_argument("--tta", action="store_true", help="average each photo with its mirror image")
    r.add_argument("--json", action="store_true")
    return p


def _train(args) -> int:
    from .train import train

    log = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    clf = train(
        args.data,
        val=args.val,
        arch=args.arch,
        epochs=args.epochs,
        batch_size=args.batch_size,
        img_size=args.img_size,
        seed=args.seed,
        out=args.out,
        precision=args.precision,
        use_cache=not args.no_cache,
        log=log,
    )
    if args.json:
        print(json.dumps({"model": str(clf.path), **clf.config["metrics"]}, indent=2))
    return 0


def _evaluate(args) -> int:
    from .classifier import load

    result = load(args.model).evaluate(args.data, tta=args.tta)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['data']}: {result['n_images']} images, {result['n_skipped']} skipped")
    print(f"accuracy {result['accuracy']:.4f}   loss {result['loss']:.4f}" + ("   (with TTA)" if args.tta else ""))
    width = max(len(c) for c in result["classes"]) + 2
    print(f"\n{'class':<{width}}precision  recall  f1      support")
    for name, m in result["per_class"].items():
        print(f"{name:<{width}}{m['precision']:<11.4f}{m['recall']:<8.4f}{m['f1']:<8.4f}{m['support']}")
    print(f"\nconfusion matrix (rows: true, columns: predicted)\n{'':<{width}}" + "".join(f"{c:>{width}}" for c in result["classes"]))
    for name, row in zip(result["classes"], result["confusion_matrix"]):
        print(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))
    for path, why in result["skipped"].items():
        print(f"skipped {path}: {why}", file=sys.stderr)
    return 0


def _predict(args) -> int:
    from .classifier import load

    results = load(args.model).predict(args.paths, tta=args.tta)
    failed = [r for r in results if "error" in r]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        width = max(len(r["path"]) for r in results) + 2 if results else 0
        for r in results:
            if "error" in r:
                print(f"{r['path']:<{width}}error: {r['error']}")
            else:
                print(f"{r['path']:<{width}}{r['label']}  {r['probability']:.2f}")
    if not results:
        raise UserError("no images found in " + " ".join(args.paths))
    if failed:
        print(f"pawnet: {len(failed)} of {len(results)} files could not be read", file=sys.stderr)
    return 2 if len(failed) == len(results) else 0


COMMANDS = {"train": _train, "evaluate": _evaluate, "predict": _predict}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"pawnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pawnet: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug, not a user mistake: say so in one line unless asked for more
        if os.environ.get("PAWNET_DEBUG"):
            traceback.print_exc()
        print(f"pawnet: unexpected error: {type(e).__name__}: {e} (set PAWNET_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
