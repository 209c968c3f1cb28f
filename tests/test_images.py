"""The one preprocessing path, and every kind of awkward file it meets."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pawnet.cache import MappedPixels, cached_decode, decode
from pawnet.images import ImageError, Preprocessing, load_pixels

from conftest import png_claiming

PREP = Preprocessing(size=32)


def halves(w=80, h=40):
    """Left half red, right half blue."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2 :, 2] = 255
    return a


def test_rgb_jpeg_gives_square_uint8(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray(halves(800, 400)).save(path, quality=95)
    px = load_pixels(path, PREP)
    assert px.shape == (32, 32, 3) and px.dtype == np.uint8
    assert px[16, 4, 0] > 200 and px[16, 4, 2] < 60  # red stays left after draft decoding
    assert px[16, 28, 2] > 200 and px[16, 28, 0] < 60


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.fromarray(halves()).convert("RGBA" if mode in ("LA",) else "RGB")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
        assert img.mode == "I;16"
    elif mode == "I":
        img = Image.fromarray(np.asarray(img.convert("L"), np.int32) * 257)
        assert img.mode == "I"
    else:
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode in ("CMYK", "I") else "x.png")
    img.save(path)
    px = load_pixels(path, PREP)
    assert px.shape == (32, 32, 3) and px.dtype == np.uint8
    if mode in ("I;16", "I"):
        # 16-bit values are scaled down, not clipped: the red half's grey (76) comes back near 76.
        assert 60 < px[16, 4].mean() < 95


def test_transparency_is_laid_over_white(tmp_path):
    a = np.zeros((40, 40, 4), np.uint8)  # fully transparent black
    path = tmp_path / "clear.png"
    Image.fromarray(a, "RGBA").save(path)
    assert load_pixels(path, PREP).min() == 255


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the stored image rotated 90 degrees clockwise
    Image.fromarray(halves(80, 40)).save(path, exif=exif, quality=95)
    px = load_pixels(path, Preprocessing(size=32))
    # Stored red-left/blue-right; shown rotated clockwise, red is on top.
    assert px[2, 16, 0] > 200 and px[29, 16, 2] > 200


def test_crop_keeps_aspect(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(halves(200, 50)).save(path)
    px = load_pixels(path, Preprocessing(size=32, resize="crop"))
    # The centre crop of a 4:1 red|blue image straddles the middle: half red, half blue.
    assert px[:, :14, 0].min() > 200 and px[:, 18:, 2].min() > 200


def test_wrong_extension_is_read_by_content(tmp_path):
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(halves()).save(path, format="PNG")
    assert load_pixels(path, PREP).shape == (32, 32, 3)


def test_tiny_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 200, 30)).save(path)
    assert (load_pixels(path, PREP) == [10, 200, 30]).all()


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(20_000, 20_000))
    with pytest.raises(ImageError, match="refused"):
        load_pixels(path, PREP)


@pytest.mark.parametrize("kind", ["jpeg", "progressive", "png"])
def test_a_photo_over_the_pixel_limit_is_read_only_where_its_jpeg_decodes_smaller(tmp_path, monkeypatch, kind):
    # A 100-megapixel camera's JPEG is decoded at an eighth of its size: under the limit. A PNG,
    # or a progressive JPEG (its decoder holds the whole image), is refused.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    path = tmp_path / ("big.png" if kind == "png" else "big.jpg")
    Image.fromarray(halves(1600, 1200)).save(path, progressive=kind == "progressive")  # 1.92 megapixels
    if kind == "jpeg":
        assert load_pixels(path, PREP, max_pixels=1_000_000).shape == (PREP.size, PREP.size, 3)
    else:
        with pytest.raises(ImageError, match="over the pixel limit"):
            load_pixels(path, PREP, max_pixels=1_000_000)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 50],
    ids=["zero-bytes", "text", "jpeg-header-only"],
)
def test_unreadable_files_raise_one_line(tmp_path, content):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError) as e:
        load_pixels(path, PREP)
    assert "\n" not in str(e.value) and str(e.value)


def test_truncated_jpeg_is_an_error(tmp_path):
    path = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ImageError):
        load_pixels(path, PREP)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ImageError, match="No such file"):
        load_pixels(tmp_path / "nothing.jpg", PREP)


def test_decode_skips_and_lists_unreadable_files(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(halves()).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    out = decode([good, bad, good], PREP)
    assert out.pixels.shape == (2, 32, 32, 3)
    assert out.ok.tolist() == [0, 2]
    assert list(out.skipped([good, bad, good])) == [str(bad)]


def test_cache_holds_exactly_what_prediction_computes(tmp_path):
    files = []
    for i in range(5):
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (300, 200, 3), np.uint8)).save(files[-1])
    first = cached_decode(files, PREP)
    second = cached_decode(files, PREP)  # read back from disk, memory-mapped
    assert isinstance(second.pixels, MappedPixels)
    for i, f in enumerate(files):
        assert np.array_equal(second.pixels[i], load_pixels(f, PREP))
        assert np.array_equal(first.pixels[i], second.pixels[i])


def test_cache_notices_a_changed_file(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (50, 50), (255, 0, 0)).save(path)
    assert cached_decode([path], PREP).pixels[0, 0, 0, 0] == 255
    Image.new("RGB", (60, 50), (0, 0, 255)).save(path)  # a new size changes the key even within one mtime tick
    assert cached_decode([path], PREP).pixels[0, 0, 0, 0] == 0


def test_cache_hands_back_pages_so_resident_memory_stays_bounded(tmp_path, monkeypatch):
    if not Path("/proc/self/smaps").exists():
        pytest.skip("resident memory per mapping is read from Linux's /proc/self/smaps")
    from PIL import Image

    prep = Preprocessing(size=64)
    files = []
    for i in range(400):  # 400 x 12 KB = 4.9 MB of pixels
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (64, 64, 3), np.uint8)).save(files[-1])
    monkeypatch.setenv("PAWNET_CACHE", str(tmp_path / "cache"))
    cached_decode(files, prep)
    pixels = cached_decode(files, prep).pixels
    assert isinstance(pixels, MappedPixels)

    def resident_kb():
        lines = Path("/proc/self/smaps").read_text().splitlines()
        total, inside = 0, False
        for line in lines:
            if line[:1].isalnum() and "-" in line.split()[0]:
                inside = line.endswith(".pixels")
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
        return total

    monkeypatch.setattr(MappedPixels, "RELEASE_BYTES", 1 << 20)
    peak = 0
    for start in range(0, len(pixels), 20):
        assert np.array_equal(pixels[start : start + 20][0], load_pixels(files[start], prep))
        peak = max(peak, resident_kb())
    # Without handing pages back the whole 4.9 MB file ends up resident.
    assert peak < 2.5 * 1024
