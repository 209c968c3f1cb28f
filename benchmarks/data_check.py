"""`pawnet data check` throughput on the shared photos: cold, then with its per-file cache.

python benchmarks/data_check.py [DATA]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from photos import DEFAULT_DATA, missing


def main() -> int:
    data = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DATA
    if missing(data):
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PAWNET_CACHE"] = tmp  # a cold cache of its own
        from pawnet import audit

        for label in ("cold", "with the cache"):
            report = audit.check(data)
            print(
                f"{label:<16} {report['n_images']} images in {report['seconds']:6.2f} s "
                f"= {report['images_per_second']:8.0f} images/s"
            )
        print("findings:", report["summary"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
