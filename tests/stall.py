"""Run `python -m pawnet ARGS`, but stop still at one moment so a test can kill -9 the process there.

    python tests/stall.py MOMENT ARGS...

MOMENT is `decode` (while decoding the photos, the cache half written), `step:K` (at the K-th
call of the loss, mid-epoch), or `checkpoint:E` (epoch E's checkpoint written to its temporary
file, not yet renamed into place). The process prints STALLED and sleeps until it is killed.
"""

import sys
import time

import torch

import pawnet.cache
import pawnet.training
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


moment, args = sys.argv[1], sys.argv[2:]
kind, _, n = moment.partition(":")
if kind == "decode":
    pawnet.cache._decode_one = at_call(pawnet.cache._decode_one, 20)
elif kind == "step":
    pawnet.training.loss_fn = at_call(pawnet.training.loss_fn, int(n))
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
