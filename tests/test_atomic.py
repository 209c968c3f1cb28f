"""Files written whole or not at all, and a full disk said as one."""

from collections import namedtuple

import pytest

from pawnet import atomic
from pawnet.errors import UserError

Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize("free", [0, 10 << 30])
def test_a_write_that_fails_on_a_full_disk_is_said_so_and_the_old_file_stays(tmp_path, monkeypatch, free):
    # PyTorch's checkpoint writer reports a full disk as "RuntimeError: [enforce fail at
    # inline_container.cc] unexpected pos": that came out as an unexpected error.
    target = tmp_path / "checkpoint.pt"
    target.write_text("the last epoch's")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: Usage(1 << 40, (1 << 40) - free, free))
    with pytest.raises(UserError if free == 0 else RuntimeError) as e, atomic.replacing(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("unexpected pos 9806336 vs 9806224")
    if free == 0:
        assert str(e.value) == f"{target}: not written, the disk is full (the file there before, if any, is kept)"
    assert target.read_text() == "the last epoch's" and [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
