"""The shared image loader on real image files, including broken ones."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sk_edge.errors import SkEdgeError, UsageError
from sk_edge.images import ImageStream, find_images, load_image, sample_paths, to_tensor
from sk_edge.preprocess import Preprocess
from sk_edge.reference.digits import ASSETS

from conftest import CALIB


PHOTO = ASSETS / "backgrounds" / "fruits.jpg"  # a real photograph, 256 px wide


def test_calib_data_holds_enough_real_images():
    paths = find_images(CALIB)
    assert len(paths) >= 512
    with Image.open(paths[0]) as im:
        assert im.size == (64, 64) and im.mode == "RGB"


@pytest.mark.parametrize("fmt", ["png", "bmp", "webp", "jpeg"])
def test_every_format_decodes_to_the_same_tensor(tmp_path, fmt):
    pre = Preprocess(input_size=64)
    reference = load_image(PHOTO, pre)
    path = tmp_path / f"photo.{fmt}"
    with Image.open(PHOTO) as im:
        im.save(path, **({"quality": 100} if fmt in ("jpeg", "webp") else {}))
    decoded = load_image(path, pre)
    assert decoded.shape == (3, 64, 64) and decoded.dtype == np.float32
    # lossless formats reproduce the JPEG source exactly; lossy ones to a few grey levels
    tolerance = 0 if fmt in ("png", "bmp") else 12 / 255 / min(pre.std)
    assert np.abs(decoded - reference).max() <= tolerance + 1e-6


def test_crop_and_resize_modes_and_normalisation(tmp_path):
    # A 100x50 image: left half black, right half white.
    arr = np.zeros((50, 100, 3), np.uint8)
    arr[:, 50:] = 255
    path = tmp_path / "halves.png"
    Image.fromarray(arr).save(path)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    stretched = load_image(path, Preprocess(input_size=32, mean=mean, std=std, resize="resize"))
    assert stretched.shape == (3, 32, 32)
    assert stretched[0, 0, 0] == pytest.approx((0 - 0.5) / 0.25) and stretched[0, 0, -1] == pytest.approx((1 - 0.5) / 0.25)
    # crop: short side 50 -> 32 / 0.5 = 64, so the image becomes 128x64; the centre 32x32
    # straddles the black/white boundary.
    cropped = load_image(path, Preprocess(input_size=32, mean=mean, std=std, crop_pct=0.5))
    assert cropped[0, 16, 0] == pytest.approx(-2.0) and cropped[0, 16, -1] == pytest.approx(2.0)


def test_exif_orientation_is_ignored_as_torchvision_does_and_applied_when_asked(tmp_path):
    """A photo stored sideways with an EXIF "rotate" tag: by default sk-edge sees what torchvision's loader sees
    (the stored pixels, exactly); with exif_orientation="apply" it sees the upright photo."""
    from torchvision.datasets.folder import pil_loader

    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # white left half
    upright = tmp_path / "upright.png"
    Image.fromarray(arr).save(upright)
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 CW to view": stored sideways, shown upright
    Image.fromarray(np.rot90(arr, k=-1)).save(rotated, exif=exif, quality=100)
    pre = Preprocess(input_size=16, resize="resize")
    as_torchvision = to_tensor(pil_loader(str(rotated)), pre)
    assert np.array_equal(load_image(rotated, pre), as_torchvision)
    assert np.abs(load_image(rotated, pre) - load_image(upright, pre)).max() > 2  # sideways, as stored
    applied = dataclasses.replace(pre, exif_orientation="apply")
    assert np.abs(load_image(rotated, applied) - load_image(upright, applied)).max() < 0.2


def test_damaged_exif_does_not_abort_a_run(tmp_path):
    """EXIF whose directory claims 65535 entries in a few bytes, and one whose orientation entry has the wrong
    type (as some firmware writes): the pixels decode, so each image is used, whether or not orientation is applied."""
    import io
    import warnings

    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), 90, np.uint8)).save(buf, "JPEG", exif=exif)
    data = bytearray(buf.getvalue())
    tiff = data.index(b"Exif\x00\x00") + 6  # the TIFF header: byte order, 42, the first directory's offset (8)
    entries, wrong_type = bytearray(data), bytearray(data)
    entries[tiff + 8:tiff + 10] = b"\xff\xff"
    wrong_type[tiff + 12:tiff + 14] = b"\x00\x0c"  # DOUBLE instead of SHORT
    for name, damaged in (("entries.jpg", entries), ("type.jpg", wrong_type)):
        (tmp_path / name).write_bytes(bytes(damaged))
    for mode in ("ignore", "apply"):
        pre = Preprocess(input_size=16, resize="resize", exif_orientation=mode)
        stream = ImageStream(find_images(tmp_path), pre, batch=2, count=2, root=tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns "Corrupt EXIF data"
            (x, names), = list(stream)
        assert names == ["entries.jpg", "type.jpg"] and not stream.skipped and np.isfinite(x).all()


def _folder_with_broken_files(tmp_path, good: int) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i, src in enumerate(find_images(CALIB)[:good]):
        (root / ("sub" if i % 2 else ".") / src.name).write_bytes(src.read_bytes())
    # Named to sort first, so the stream meets them before it has enough good images.
    (root / "0_empty.png").write_bytes(b"")
    (root / "0_text.jpg").write_text("not an image")
    truncated = find_images(CALIB)[good].read_bytes()
    (root / "0_truncated.png").write_bytes(truncated[: len(truncated) // 3])
    (root / "notes.txt").write_text("ignored: not an image extension")
    return root


def test_broken_files_are_skipped_and_named(tmp_path):
    root = _folder_with_broken_files(tmp_path, good=10)
    paths = find_images(root)
    assert len(paths) == 13  # recursive, by extension, .txt left out
    stream = ImageStream(paths, Preprocess(input_size=64, resize="resize"), batch=4, count=10, root=root)
    batches = list(stream)
    assert [len(names) for _, names in batches] == [4, 4, 2]
    assert sorted(name for name, _ in stream.skipped) == ["0_empty.png", "0_text.jpg", "0_truncated.png"]
    assert len(stream.used) == 10 and len(stream.digest) == 64


def test_too_few_readable_images_says_how_many(tmp_path):
    root = _folder_with_broken_files(tmp_path, good=5)
    stream = ImageStream(find_images(root), Preprocess(input_size=64), batch=4, count=8, root=root)
    with pytest.raises(SkEdgeError) as info:
        list(stream)
    msg = str(info.value)
    assert "only 5 readable images" in msg and "8 asked for" in msg
    assert "3 unreadable skipped" in msg and "--num-images 5" in msg


def test_missing_or_empty_folders(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        find_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkEdgeError, match="no images in"):
        find_images(tmp_path / "empty")


def test_sampling_is_deterministic_and_mixes_folders():
    paths = find_images(CALIB)
    a, b = sample_paths(paths), sample_paths(paths)
    assert a == b and sorted(a) == paths and a[:20] != paths[:20]
