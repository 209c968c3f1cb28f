"""Where the benchmarks find the real photos: ../shared/datasets/cats-vs-dogs beside the project."""

import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def missing(data: Path) -> bool:
    """True, after saying so on stderr, where `data` is not a folder."""
    if Path(data).is_dir():
        return False
    print(f"no data at {data}", file=sys.stderr)
    return True
