"""Nothing lost, nothing taken: `data check --fix`, `data restore` and the decode cache, on small
trees of photos made here (symlinks, same-named files, kills midway)."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pawnet import atomic, audit, cache
from pawnet.images import Preprocessing

from conftest import pattern, run_cli


def _png(path, kind="horizontal", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(kind, 40, seed)).save(path)
    return path


def _tree(*roots) -> dict:
    """Every file and symlink under the roots, as bytes or link text, by path: what 'whole' means."""
    out = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                p = os.path.join(folder, name)
                out[p] = ("link", os.readlink(p)) if os.path.islink(p) else ("file", Path(p).read_bytes())
    return out


def _classes(root, n=3, seed=0):
    for c_i, cls in enumerate(("cats", "dogs")):
        for i in range(n):
            _png(root / cls / f"{i}.png", ("horizontal", "vertical")[c_i], seed + 100 * c_i + i)
    return root


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "cache"))


def test_symlink_out_of_data_is_moved_as_a_link_with_the_manifest_written(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "cats" / "broken.png").write_bytes(b"not a photo")
    outside = _png(tmp_path / "elsewhere" / "x.png", "vertical", 7)
    shutil.copy(outside, root / "dogs" / "x.png")
    (root / "dogs" / "y.png").symlink_to(outside)  # a copy of dogs/x.png, through a link out of DATA
    before = _tree(root, tmp_path / "elsewhere")
    moved = audit.fix(audit.check(root, use_cache=False))
    assert {m["from"] for m in moved} == {str(root / "cats" / "broken.png"), str(root / "dogs" / "y.png")}
    assert outside.read_bytes() == before[str(outside)][1]
    assert (audit.quarantine_folder(root) / "manifest.json").exists()
    assert len(audit.restore(root)) == 2
    assert _tree(root, tmp_path / "elsewhere") == before


def test_a_second_fix_never_overwrites_what_the_first_quarantined(tmp_path):
    root = _classes(tmp_path / "pets")
    first = (root / "cats" / "0.png").read_bytes()
    shutil.copy(root / "cats" / "0.png", root / "cats" / "dup.png")
    audit.fix(audit.check(root, use_cache=False))
    second = (root / "cats" / "1.png").read_bytes()
    shutil.copy(root / "cats" / "1.png", root / "cats" / "dup.png")  # the same name, another photo
    audit.fix(audit.check(root, use_cache=False))
    q = audit.quarantine_folder(root)
    kept = sorted(p.read_bytes() for p in q.rglob("*.png"))
    assert kept == sorted([first, second])
    result = run_cli("data", "restore", root)
    # Both came from cats/dup.png: one goes back, the other is refused, said so, and kept.
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("pawnet: error: restored 1 of 2 files") and "taken" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert (root / "cats" / "dup.png").read_bytes() in (first, second)
    left = json.loads((q / "manifest.json").read_text())
    assert len(left) == 1 and (q / left[0]["to"]).exists()


def test_a_symlink_between_classes_is_restored_as_a_link(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "cats" / "link.png").symlink_to("../dogs/2.png")
    before = _tree(root)
    audit.fix(audit.check(root, use_cache=False))
    assert sorted(p.read_bytes() for p in audit.quarantine_folder(root).rglob("*.png") if not p.is_symlink()) == [
        before[str(root / "dogs" / "2.png")][1]
    ]
    audit.restore(root)
    assert _tree(root) == before and not (root / "dogs" / "2.png").is_symlink()


def test_a_copy_across_train_test_and_classes_is_both_a_leak_and_a_conflict(tmp_path):
    root = tmp_path / "pets"
    for split in ("training_set", "test_set"):
        _classes(root / split, seed=0 if split == "training_set" else 50)
    shutil.copy(root / "training_set" / "cats" / "1.png", root / "test_set" / "dogs" / "from_cats.png")
    report = audit.check(root, use_cache=False)
    [group] = report["findings"]["exact_duplicates"]
    assert group["where"] == ["across classes", "across train/test"]
    assert report["summary"]["conflicting_labels"] == 1 and report["summary"]["train_test_leaks"] == 1
    moved = {m["from"] for m in audit.fix(report)}
    # No one knows which label is right: the cat labelled dog leaves the test set too.
    assert moved == {str(root / "training_set" / "cats" / "1.png"), str(root / "test_set" / "dogs" / "from_cats.png")}


def test_restore_refuses_to_overwrite_and_says_so(tmp_path):
    root = _classes(tmp_path / "pets")
    shutil.copy(root / "cats" / "0.png", root / "cats" / "dup.png")
    audit.fix(audit.check(root, use_cache=False))
    _png(root / "cats" / "dup.png", "vertical", 99)  # a new photo where the quarantined one was
    mine = (root / "cats" / "dup.png").read_bytes()
    result = run_cli("data", "restore", root)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "pawnet: error: restored 0 of 1 files; 1 not restored because its original path is taken: "
        f"{root / 'cats' / 'dup.png'} "
        f"(kept in {audit.quarantine_folder(root) / 'cats' / 'dup.png'}; "
        "move the file there aside and run restore again)"
    )
    assert (root / "cats" / "dup.png").read_bytes() == mine
    assert (audit.quarantine_folder(root) / "cats" / "dup.png").exists()


def test_legacy_manifests_of_both_formats_restore(tmp_path):
    root = _classes(tmp_path / "pets")
    q = audit.quarantine_folder(root)
    _png(q / "cat" / "a.png")
    _png(q / "cats" / "b.png", seed=1)
    (q / "manifest.json").write_text(
        json.dumps(
            [
                {"file": str(q / "cat" / "a.png"), "from": str(root / "cats" / "a.png"), "why": "unreadable"},
                {"from": str(root / "cats" / "b.png"), "to": str(q / "cats" / "b.png"), "why": "copy"},
            ]
        )
    )
    assert len(audit.restore(root)) == 2
    assert (root / "cats" / "a.png").exists() and (root / "cats" / "b.png").exists()


@pytest.fixture
def messy(tmp_path):
    """Every kind of file --fix moves: unreadable ones (two of the same name), copies within a
    class, across classes, across train/test, and links, inside DATA and out of it."""
    root = tmp_path / "pets"
    for split in ("training_set", "test_set"):
        _classes(root / split, seed=0 if split == "training_set" else 50)
    tr, te = root / "training_set", root / "test_set"
    (tr / "cats" / "indoor").mkdir()
    (tr / "cats" / "indoor" / "bad.jpg").write_bytes(b"")
    (tr / "cats" / "outdoor").mkdir()
    (tr / "cats" / "outdoor" / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    shutil.copy(tr / "cats" / "0.png", tr / "cats" / "copy.png")
    shutil.copy(tr / "dogs" / "0.png", te / "dogs" / "leak.png")
    shutil.copy(tr / "cats" / "1.png", te / "dogs" / "cat_as_dog.png")
    (tr / "cats" / "link.png").symlink_to("../dogs/2.png")
    outside = _png(tmp_path / "elsewhere" / "x.png", "vertical", 7)
    shutil.copy(outside, te / "cats" / "x.png")
    (te / "cats" / "y.png").symlink_to(outside)
    return root, [root, tmp_path / "elsewhere"]


class Killed(BaseException):
    """Stands for a kill: nothing in pawnet catches it."""


def _kill_after(monkeypatch, k):
    """From now on, `_move` stands for a kill after its k-th move (k = 0: before the first)."""
    real, calls = audit._move, []

    def move(src, dst):
        if k == 0:
            raise Killed
        real(src, dst)
        calls.append(src)
        if len(calls) == k:
            raise Killed

    monkeypatch.setattr(audit, "_move", move)


def test_fix_and_restore_killed_at_every_move_leave_a_tree_restore_makes_whole(messy, tmp_path, monkeypatch):
    root, roots = messy
    q = audit.quarantine_folder(root)
    before = _tree(*roots)
    report = audit.check(root, use_cache=False)
    n = len(audit.fix(report))
    assert n == 9
    audit.restore(root)
    assert _tree(*roots) == before and not q.exists()

    points = 0
    for k in range(
        n + 1
    ):  # killed before the first move, after each, and after the last, before the manifest says done
        with monkeypatch.context() as m:
            _kill_after(m, k)
            with pytest.raises(Killed):
                audit.fix(report)
        audit.restore(root)
        assert _tree(*roots) == before and not q.exists(), f"fix killed after {k} moves"

        audit.fix(report)
        with monkeypatch.context() as m:
            _kill_after(m, k)
            with pytest.raises(Killed):
                audit.restore(root)
        audit.restore(root)
        assert _tree(*roots) == before and not q.exists(), f"restore killed after {k} moves"
        points += 2
    assert points == 20


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pawnet import audit, cli
    real, k, moves = audit._move, int(sys.argv[1]), []
    def move(src, dst):
        real(src, dst)
        moves.append(src)
        if len(moves) == k:
            os.kill(os.getpid(), signal.SIGKILL)
    audit._move = move
    sys.exit(cli.main(sys.argv[2:]))
""")


@pytest.mark.parametrize("k", [1, 6])
def test_fix_and_restore_sigkilled_midway_leave_a_tree_restore_makes_whole(messy, k):
    root, roots = messy
    before = _tree(*roots)
    fix = subprocess.run(
        [sys.executable, "-c", KILLER, str(k), "data", "check", str(root), "--fix"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fix.returncode == -signal.SIGKILL, fix.stderr
    restore = subprocess.run(
        [sys.executable, "-c", KILLER, str(k), "data", "restore", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert restore.returncode == -signal.SIGKILL, restore.stderr
    result = run_cli("data", "restore", root)
    assert result.returncode == 0, result.stderr
    assert _tree(*roots) == before


def _bmp(path, seed):
    Image.fromarray(pattern("horizontal", 32, seed)).save(path, format="BMP")


def test_a_photo_rewritten_at_the_same_size_and_mtime_is_decoded_again(tmp_path):
    files = [tmp_path / f"{i}.bmp" for i in range(3)]
    for i, f in enumerate(files):
        _bmp(f, i)
    prep = Preprocessing(size=16)
    first = np.array(cache.cached_decode(files, prep).pixels)
    st = files[1].stat()
    _bmp(files[1], 99)  # same format and dimensions: the same size in bytes
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files[1].stat().st_size == st.st_size and files[1].stat().st_mtime_ns == st.st_mtime_ns
    second = np.array(cache.cached_decode(files, prep).pixels)
    assert np.array_equal(second[1], np.array(cache.decode([files[1]], prep).pixels)[0])
    assert not np.array_equal(first[1], second[1])


def test_a_killed_decode_leaves_no_temporary_file_once_the_data_changes(tmp_path):
    files = [_png(tmp_path / "a.png")]
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=False
    )
    folder = cache.cache_dir()
    folder.mkdir(parents=True)
    leftover = folder / f".{'0' * 32}.pixels.{int(dead.stdout)}.tmp"
    leftover.write_bytes(b"\0" * 1000)
    cache.cached_decode(files, Preprocessing(size=16))
    assert not leftover.exists()


def test_evaluate_no_cache_decodes_without_the_cache(trained_model, tmp_path):
    from conftest import make_dataset

    data = make_dataset(tmp_path / "data", n=4, layout="folders")
    result = run_cli("evaluate", trained_model, data, "--no-cache", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_images"] == 8
    assert not list((tmp_path / "cache").glob("*.pixels"))


def test_replaced_files_get_the_mode_of_any_new_file(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    with atomic.replacing(tmp_path / "weights") as tmp:
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600))  # as safetensors' writer does
    assert stat.S_IMODE((tmp_path / "weights").stat().st_mode) == 0o666 & ~umask
