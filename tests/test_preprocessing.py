"""The user's preprocessing, end to end (issue 12): sk-edge's loader against torchvision and timm.

Each resize mode gives the tensor the equivalent torchvision/timm eval transform gives, on real
photographs of several sizes. Tolerance: one 8-bit level (1/255/std). Pillow >= 13 may run the two
resampling passes of one resize call in the other order, which moves some pixels by one level;
sk-edge resizes one axis at a time (sk_edge.images.resample) so its pixels do not depend on the
Pillow release, and the C++ runtime reproduces them exactly (cpp/tests/test_preprocess.cpp).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from sk_edge.images import find_images, resized_size, to_tensor
from sk_edge.preprocess import Preprocess, PreprocessRequest, resolve
from sk_edge.reference import digits
from sk_edge.errors import UsageError

PHOTOS = sorted((digits.__file__ and find_images(__import__("pathlib").Path(digits.__file__).parent / "assets" / "backgrounds")))[:6]


def photos():
    for path in PHOTOS:
        with Image.open(path) as im:
            yield path.name, im.convert("RGB")


def one_level(pre: Preprocess) -> float:
    return 1 / 255 / min(pre.std) + 1e-6


def compare(ours: np.ndarray, theirs: np.ndarray, pre: Preprocess) -> float:
    assert ours.shape == theirs.shape
    diff = float(np.abs(ours - theirs).max())
    assert diff <= one_level(pre), diff
    return diff


@pytest.mark.parametrize("size, crop_pct, interpolation", [(224, 0.875, "bilinear"), (224, 0.95, "bicubic"), (64, 1.0, "bilinear")])
def test_crop_is_torchvisions_resize_and_center_crop(size, crop_pct, interpolation):
    from torchvision import transforms as T

    pre = Preprocess(input_size=size, crop_pct=crop_pct, interpolation=interpolation)
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    theirs = T.Compose([T.Resize(math.floor(size / crop_pct), mode), T.CenterCrop(size), T.ToTensor(),
                        T.Normalize(pre.mean, pre.std)])
    for _name, im in photos():
        compare(to_tensor(im, pre), theirs(im).numpy(), pre)


def test_crop_is_timms_eval_transform_square_and_not():
    import timm
    from timm.data import create_transform, resolve_data_config

    model = timm.create_model("skresnet18", pretrained=False)
    for size in ((3, 224, 224), (3, 160, 224)):
        config = resolve_data_config({"input_size": size}, model=model)
        theirs = create_transform(**config)
        pre = Preprocess(input_size=size[1] if size[1] == size[2] else size[1:], mean=config["mean"], std=config["std"],
                         crop_pct=config["crop_pct"], interpolation=config["interpolation"])
        for _name, im in photos():
            compare(to_tensor(im, pre), theirs(im).numpy(), pre)


def test_stretch_and_letterbox_are_the_torchvision_compositions():
    from torchvision import transforms as T

    for size in (64, (48, 80)):
        pre = Preprocess(input_size=size, resize="resize", interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)
        theirs = T.Compose([T.Resize((pre.height, pre.width)), T.ToTensor(), T.Normalize(pre.mean, pre.std)])
        for _name, im in photos():
            compare(to_tensor(im, pre), theirs(im).numpy(), pre)
    pre = Preprocess(input_size=(96, 128), resize="letterbox", interpolation="bicubic")
    fill = tuple(int(round(m * 255)) for m in pre.mean)
    padded = 0
    for _name, im in photos():
        w, h = resized_size(im.width, im.height, pre)
        left, top = (pre.width - w) // 2, (pre.height - h) // 2
        theirs = T.Compose([T.Resize((h, w), T.InterpolationMode.BICUBIC),
                            T.Pad((left, top, pre.width - w - left, pre.height - h - top), fill=fill),
                            T.ToTensor(), T.Normalize(pre.mean, pre.std)])
        ours = to_tensor(im, pre)
        compare(ours, theirs(im).numpy(), pre)
        padding = np.concatenate([ours[:, :top, :].reshape(3, -1), ours[:, :, :left].reshape(3, -1)], axis=1)
        assert np.abs(padding).max(initial=0) < 0.01  # the mean colour normalises to (about) zero
        padded += padding.size > 0
    assert padded  # some photographs needed padding


def test_bgr_models_get_the_channels_reversed():
    im = next(photos())[1]
    rgb, bgr = to_tensor(im, Preprocess(input_size=64)), to_tensor(im, Preprocess(input_size=64, channel_order="BGR"))
    assert np.array_equal(rgb[::-1], bgr)


def test_fields_resolve_command_line_first_then_file_then_checkpoint_then_model(tmp_path):
    default = Preprocess(input_size=224)
    cli = PreprocessRequest.from_fields({"mean": "0.5,0.5,0.5", "resize": "stretch"}, "the command line")
    (tmp_path / "p.json").write_text(json.dumps({"mean": [0.1, 0.2, 0.3], "std": [0.2, 0.2, 0.2], "input_size": "96x128"}))
    file = PreprocessRequest.from_json_file(tmp_path / "p.json")
    checkpoint = PreprocessRequest.from_checkpoint({"pretrained_cfg": {"input_size": (3, 64, 64), "interpolation": "bicubic",
                                                                       "crop_mode": "border", "std": (1, 1, 1)}}, tmp_path / "w.pth")
    pre, sources = resolve(default, [cli, file, checkpoint], "the model's defaults")
    assert pre == Preprocess(input_size=(96, 128), mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2), resize="resize",
                             interpolation="bicubic", crop_pct=0.875)
    assert sources["mean"] == "the command line" and sources["std"].startswith("--preprocess")
    assert sources["interpolation"] == "the checkpoint w.pth" and sources["crop_pct"] == "the model's defaults"
    for bad, message in (({"mean": "1,2"}, "needs three numbers"), ({"sigma": 1}, "unknown preprocessing field 'sigma'"),
                         ({"input_size": "a"}, "is not N or HxW")):
        with pytest.raises(UsageError, match=message):
            PreprocessRequest.from_fields(bad, "x")
    with pytest.raises(UsageError, match="std must be positive"):
        resolve(default, [PreprocessRequest.from_fields({"std": "0,1,1"}, "x")], "d")


def test_a_users_model_exported_with_its_own_preprocessing(tmp_path):
    """The M=3 checkpoint carries mean, std and input size; the command line adds the rest; every stage uses them."""
    from shared_model import M3_ARGS, M3_CHECKPOINT

    args = [a for k, v in M3_ARGS.items() for a in ("--model-arg", f"{k}={v}")]
    out = run_cli("export", "--model", "sknet26", *args, "--num-classes", "10", "--weights", str(M3_CHECKPOINT),
                  "--resize", "stretch", "--interpolation", "bicubic", "-w", str(tmp_path / "wd"))
    assert out.returncode == 0, out.stderr
    assert ("preprocessing: 64x64, stretch, bicubic, mean (0.5, 0.5, 0.5), std (0.25, 0.25, 0.25), RGB (from the checkpoint "
            "sknet26m3_digits.pth: input_size, mean, std; the command line: resize, interpolation; the model's defaults: "
            "crop_pct, channel_order, exif_orientation)") in out.stderr
    export = json.loads((tmp_path / "wd" / "export.json").read_text())
    assert export["preprocess"]["input_size"] == 64 and export["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    assert export["preprocess"]["resize"] == "resize" and export["preprocess"]["interpolation"] == "bicubic"
    assert export["model"]["input"]["shape"] == [1, 3, 64, 64]
    # A non-square input: the export, its graph and its preprocessing all say H x W.
    out = run_cli("export", "--model", "sknet26", *args, "--num-classes", "10", "--weights", str(M3_CHECKPOINT),
                  "--input-size", "64x96", "--resize", "letterbox", "-w", str(tmp_path / "wide"))
    assert out.returncode == 0, out.stderr
    export = json.loads((tmp_path / "wide" / "export.json").read_text())
    assert export["model"]["input"]["shape"] == [1, 3, 64, 96] and export["preprocess"]["input_size"] == [64, 96]
    bad = run_cli("export", "--model", "sknet26", "--input-size", "64x95", "-w", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "--input-size 95 does not suit sknet26" in bad.stderr
    bad = run_cli("export", "--model", "sknet26", "--mean", "0.5,0.5", "-w", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "mean from the command line needs three numbers R,G,B" in bad.stderr


def test_class_names_travel_to_every_consumer(tmp_path, class_folders):
    from shared_model import M3_ARGS, M3_CHECKPOINT

    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n\n")
    args = ["--model", "sknet26", *[a for k, v in M3_ARGS.items() for a in ("--model-arg", f"{k}={v}")], "--num-classes", "10",
            "--weights", str(M3_CHECKPOINT), "--resize", "stretch"]
    (tmp_path / "short.txt").write_text("zero\none\n")
    bad = run_cli("build", "--precision", "fp16", *args, "--images", str(class_folders), "--class-names",
                  str(tmp_path / "short.txt"), "-w", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "names 2 classes and the model has 10" in bad.stderr and "Traceback" not in bad.stderr
    out = run_cli("build", "--precision", "fp16", *args, "--images", str(class_folders), "--class-names",
                  str(tmp_path / "names.txt"), "-w", str(tmp_path / "wd"))
    assert out.returncode == 0, out.stderr
    wd = tmp_path / "wd"
    assert json.loads((wd / "export.json").read_text())["class_names"] == names
    verify = json.loads((wd / "verify.json").read_text())
    assert verify["class_names"] == names and verify["preprocess"]["resize"] == "resize"
    assert "| preprocessing | 64x64, stretch, bilinear, mean (0.5, 0.5, 0.5)" in (wd / "verify.md").read_text()
    assert run_cli("export-deepstream", "-w", str(wd)).returncode == 0
    assert (wd / "deepstream_labels.txt").read_text() == ";".join(names) + "\n"
    assert "labelfile-path=deepstream_labels.txt" in (wd / "deepstream_nvinfer.txt").read_text()
    assert run_cli("export-triton", "-w", str(wd), "--repo", str(tmp_path / "repo")).returncode == 0
    assert (tmp_path / "repo" / "sknet26" / "labels.txt").read_text().splitlines() == names
    assert 'label_filename: "labels.txt"' in (tmp_path / "repo" / "sknet26" / "config.pbtxt").read_text()
    # verify.md names the classes of the images that changed class.
    from sk_edge.verify import markdown

    doc = {**verify, "metrics": {**verify["metrics"], "disagreements": [{"image": "3/x.png", "reference": 3, "candidate": 8}],
                                 "worst_classes": [{"class": 3, "images": 60, "disagreements": 1, "rate": 1 / 60}]}}
    text = markdown(doc)
    assert "- 3/x.png: reference 3 (three), candidate 8 (eight)" in text and "| 3 (three) | 60 | 1 |" in text
