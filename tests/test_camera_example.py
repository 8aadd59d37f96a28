"""examples/camera_classify.py on a real video file of held-out SK-Digits frames."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from sk_edge.export import export_model  # noqa: E402
from sk_edge.models import build_model  # noqa: E402
from sk_edge.reference import digits  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "camera_classify.py"


def test_classifies_a_video_file_and_writes_the_annotated_video(tmp_path):
    wd = tmp_path / "wd"
    export_model(build_model("sknet26-digits"), wd)
    frames = list(digits.sample("eval", 40))
    video = tmp_path / "digits.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for image, _, _ in frames:
        writer.write(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
    writer.release()

    out = subprocess.run([sys.executable, str(EXAMPLE), "-w", str(wd), "--source", str(video), "--precision", "fp32",
                          "--out", str(tmp_path / "annotated.avi"), "--no-window"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "model.fp32.onnx on ONNX Runtime (no TensorRT engine here)" in out.stderr
    preds = [json.loads(line) for line in out.stdout.splitlines()]
    assert [p["frame"] for p in preds] == list(range(40))
    correct = sum(p["class"] == label for p, (_, label, _) in zip(preds, frames))
    assert correct >= 34  # 97 % accurate model, MJPG-compressed frames
    check = cv2.VideoCapture(str(tmp_path / "annotated.avi"))
    assert int(check.get(cv2.CAP_PROP_FRAME_COUNT)) == 40


def test_bad_source_is_one_line(tmp_path):
    wd = tmp_path / "wd"
    export_model(build_model("sknet26-digits"), wd)
    out = subprocess.run([sys.executable, str(EXAMPLE), "-w", str(wd), "--source", "missing.mp4", "--no-window", "--precision", "fp32"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "cannot open video source 'missing.mp4'" in out.stderr and "Traceback" not in out.stderr
