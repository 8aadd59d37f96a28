"""Write the preprocessing fixtures the C++ tests compare with: real images, and what sk-edge's Python
loader makes of them.

    python cpp/tests/make_fixtures.py OUT_DIR

For each image and each preprocessing setting: the decoded RGB bytes (``.rgb``), the resized pixels
(``sk_edge.images.to_pixels``, ``.u8``) and the network input (``to_tensor``, float32 CHW, ``.f32``),
listed in ``OUT_DIR/manifest.json``. The images are the real photographs bundled with the
reference model (several sizes and aspect ratios) and SK-Digits renders.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from sk_edge.images import to_pixels, to_tensor
from sk_edge.preprocess import Preprocess
from sk_edge.reference import digits

ASSETS = Path(digits.__file__).resolve().parent / "assets" / "backgrounds"
SETTINGS = {
    "crop224-bilinear": Preprocess(input_size=224, resize="crop", crop_pct=0.875, interpolation="bilinear"),
    "crop224-bicubic": Preprocess(input_size=224, resize="crop", crop_pct=0.875, interpolation="bicubic"),
    "crop96-bicubic-full": Preprocess(input_size=96, resize="crop", crop_pct=1.0, interpolation="bicubic",
                                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    "stretch64-bilinear": Preprocess(input_size=64, resize="resize", crop_pct=1.0, interpolation="bilinear",
                                     mean=(0.322, 0.307, 0.276), std=(0.189, 0.179, 0.191)),
    "stretch64-nearest": Preprocess(input_size=64, resize="resize", crop_pct=1.0, interpolation="nearest"),
    # 256 -> 224 columns: where Pillow's NEAREST (the centre advanced by repeated addition) and (x + 0.5) * scale
    # differ (25 of 224 columns), which the 4:1 case above never shows.
    "stretch224-nearest": Preprocess(input_size=224, resize="resize", crop_pct=1.0, interpolation="nearest"),
    "crop224-nearest": Preprocess(input_size=224, resize="crop", crop_pct=0.875, interpolation="nearest"),
    "letterbox96-bilinear": Preprocess(input_size=96, resize="letterbox", interpolation="bilinear"),
    "letterbox64x96-bicubic-bgr": Preprocess(input_size=(64, 96), resize="letterbox", interpolation="bicubic",
                                             channel_order="BGR"),
    "crop160x224-bilinear": Preprocess(input_size=(160, 224), resize="crop", crop_pct=0.9, interpolation="bilinear"),
    "stretch48x80-bilinear-bgr": Preprocess(input_size=(48, 80), resize="resize", interpolation="bilinear",
                                            channel_order="BGR"),
}


def images() -> list[tuple[str, np.ndarray]]:
    found = []
    for path in sorted(ASSETS.glob("*.jpg"))[:4]:
        with Image.open(path) as im:
            found.append((path.stem, np.asarray(ImageOps.exif_transpose(im).convert("RGB"))))
    for n, (image, _, _) in enumerate(digits.sample("eval", 2, seed=3)):
        found.append((f"digits{n}", image))
    # An odd size that upscales (a 37x23 crop of a photograph).
    found.append(("small37x23", np.ascontiguousarray(found[0][1][:23, :37])))
    return found


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    for name, rgb in images():
        (out / f"{name}.rgb").write_bytes(np.ascontiguousarray(rgb, dtype=np.uint8).tobytes())
        for label, pre in SETTINGS.items():
            image = Image.fromarray(rgb)
            case = f"{name}-{label}"
            (out / f"{case}.u8").write_bytes(to_pixels(image, pre).tobytes())
            (out / f"{case}.f32").write_bytes(to_tensor(image, pre).astype(np.float32).tobytes())
            cases.append({"name": case, "image": f"{name}.rgb", "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
                          "preprocess": pre.to_dict(), "pixels": f"{case}.u8", "tensor": f"{case}.f32"})
    (out / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1))
    print(f"wrote {len(cases)} cases to {out}")
    write_fp16_graph(out)


def write_fp16_graph(out: Path) -> None:
    """``OUT_DIR/model.fp16.onnx``: the reference model's FP16 graph, for the test that builds a TensorRT-RTX engine
    through the C++ API (FP16: the 1.6.1 builder, whose headers are public, stops on INT8 Q/DQ convolutions)."""
    import shutil
    import tempfile

    from sk_edge.export import export_model
    from sk_edge.models import build_model
    from sk_edge.quantize import quantize_model

    if (out / "model.fp16.onnx").is_file():
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "work"
        export_model(build_model("sknet26-digits"), work)
        quantize_model(work, "fp16")
        shutil.copy(work / "model.fp16.onnx", out / "model.fp16.onnx")
    print(f"wrote {out / 'model.fp16.onnx'}")

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python cpp/tests/make_fixtures.py OUT_DIR")
    main(Path(sys.argv[1]))
