"""Where the benchmarks find the real photos (../shared/datasets/cats-vs-dogs beside the project),
and the CPU their timings are named with."""

import platform
import sys
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cats-vs-dogs"


def missing(data: Path) -> bool:
    """True, after saying so on stderr, where `data` is not a folder."""
    if Path(data).is_dir():
        return False
    print(f"no data at {data}", file=sys.stderr)
    return True


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what Python knows of the machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
