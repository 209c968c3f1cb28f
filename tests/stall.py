"""Run `python -m pawnet ARGS`, but stop still at one moment so a test can kill -9 the process there.

    python tests/stall.py MOMENT ARGS...

MOMENT is `decode` (while decoding the photos, the cache half written), `step:K` (at the K-th
call of the loss, mid-epoch), or `checkpoint:E` (epoch E's checkpoint written to its temporary
file, not yet renamed into place). The process prints STALLED and sleeps until it is killed.
Only the libraries' public functions are wrapped (Pillow's `Image.open`, PyTorch's loss and
`torch.save`), so pawnet's own code runs as it is.
"""

import signal
import sys
import time

import torch
import torch.nn.functional as F
from PIL import Image

from pawnet.cli import main


def stall():
    print("STALLED", flush=True)
    time.sleep(600)


def at_call(function, k):
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == k:
            stall()
        return function(*args, **kwargs)

    return wrapper


# A process started in the background of a non-interactive shell (as CI may run the tests)
# inherits SIGINT ignored, and Python then never raises KeyboardInterrupt: take Ctrl-C as a
# terminal would deliver it.
signal.signal(signal.SIGINT, signal.default_int_handler)

moment, args = sys.argv[1], sys.argv[2:]
kind, _, n = moment.partition(":")
if kind == "decode":
    Image.open = at_call(Image.open, 20)
elif kind == "step":
    # The seed network's loss: one call per training step and per validation batch.
    F.binary_cross_entropy_with_logits = at_call(F.binary_cross_entropy_with_logits, int(n))
elif kind == "checkpoint":
    save = torch.save

    def slow_save(state, path, *a, **kw):
        save(state, path, *a, **kw)
        if isinstance(state, dict) and state.get("epoch") == int(n):
            stall()

    torch.save = slow_save
else:
    raise SystemExit(f"unknown moment {moment}")
raise SystemExit(main(args))
