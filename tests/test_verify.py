"""`sk-edge verify` on the trained reference model: a good INT8 graph passes, a broken one fails."""

import json
import shutil

import numpy as np
import onnx
import pytest

from sk_edge.artifacts import sha256_file
from sk_edge.export import export_model
from sk_edge.models import build_model
from sk_edge.quantize import CalibrationOptions, build_int8_graph, calibrate, quantize_model
from sk_edge.quantize.histogram import StreamingHistogram
from sk_edge.quantize.methods import amax_entropy
from sk_edge.quantize.plan import plan_quantization
from sk_edge.verify import compare

from conftest import CALIB, calibration_subset, run_cli as run


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    wd = tmp_path_factory.mktemp("verify")
    export_model(build_model("sknet26-digits"), wd)
    images = calibration_subset(wd / "calib", 64)
    calibrate(wd, images, CalibrationOptions(num_images=64))
    quantize_model(wd, "int8")
    return wd


def test_int8_passes_with_labels(workdir, held_out):
    folder, labels = held_out
    out = run("verify", "-w", str(workdir), "--images", str(folder), "--labels", str(labels))
    assert out.returncode == 0, out.stderr
    assert "verify PASSED" in out.stderr
    doc = json.loads((workdir / "verify.json").read_text())
    m = doc["metrics"]
    assert doc["candidate"]["precision"] == "int8" and "PyTorch" in doc["reference"]
    assert m["images"] == 200 and m["labelled_images"] == 200
    assert m["top1_agreement"] >= 0.98 and m["accuracy_reference"] >= 0.9
    assert 0 <= m["kl_mean"] < 0.01 and m["cosine_worst"] > 0.9
    assert 0 <= m["selection_drift"] < 0.05  # the INT8 graph's SK gates stay close to FP32's
    assert len(m["disagreements"]) == round((1 - m["top1_agreement"]) * 200)
    assert "# sk-edge verify: PASS" in (workdir / "verify.md").read_text()


def test_a_broken_int8_graph_fails_in_one_line(workdir, held_out, tmp_path):
    """Ranges from a KL search that counts the zero spike: a real, badly quantized model."""
    bad = tmp_path / "bad"
    shutil.copytree(workdir, bad, ignore=shutil.ignore_patterns("verify.*"))
    calib = json.loads((bad / "calib.json").read_text())
    fp32 = onnx.load(str(bad / "model.fp32.onnx"))
    plan = plan_quantization(fp32)
    amax = {n: max(amax_entropy(StreamingHistogram.from_dict(calib["tensors"][n]["histogram"]), ignore_zero_bin=False), 1e-8)
            for n in plan.activations}
    model, _ = build_int8_graph(fp32, plan, amax)
    (bad / "model.int8.onnx").write_bytes(model.SerializeToString())
    folder, labels = held_out
    # Edited by hand, the graph no longer matches its sidecar: refused before any image runs.
    out = run("verify", "-w", str(bad), "--candidate", "int8", "--images", str(folder), "--labels", str(labels))
    assert out.returncode == 1 and "does not match its model.int8.json" in out.stderr
    assert not (bad / "verify.json").exists()
    # Sealed into its sidecar (as a quantize with these ranges would write it), it is judged, and fails.
    sidecar = json.loads((bad / "model.int8.json").read_text())
    sidecar["outputs"]["model.int8.onnx"] = {"sha256": sha256_file(bad / "model.int8.onnx"),
                                             "bytes": (bad / "model.int8.onnx").stat().st_size}
    (bad / "model.int8.json").write_text(json.dumps(sidecar))
    out = run("verify", "-w", str(bad), "--candidate", "int8", "--images", str(folder), "--labels", str(labels))
    assert out.returncode == 1
    errors = [line for line in out.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "verify FAILED: top-1 agreement" in errors[0] and "< 99.00%" in errors[0]
    assert "Traceback" not in out.stderr
    doc = json.loads((bad / "verify.json").read_text())
    assert not doc["passed"] and doc["metrics"]["top1_agreement"] < 0.9
    assert "# sk-edge verify: FAIL" in (bad / "verify.md").read_text()


def test_fewer_images_than_min_images_is_a_refusal_not_a_verdict(workdir, held_out, tmp_path):
    """60 images: refused in one line (exit 2) before any verdict is written; --min-images 50 accepts them."""
    folder, _ = held_out
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(folder.glob("*.png"))[:60]:
        shutil.copy(path, few / path.name)
    (workdir / "verify.json").unlink(missing_ok=True)
    out = run("verify", "-w", str(workdir), "--candidate", "int8", "--images", str(few))
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "only 60 images judge this build" in errors[0] and "at least 100" in errors[0] and "--min-images N" in errors[0]
    assert not (workdir / "verify.json").exists()
    accepted = run("verify", "-w", str(workdir), "--candidate", "int8", "--images", str(few), "--min-images", "50")
    assert accepted.returncode in (0, 1), accepted.stderr  # a verdict, whichever it is
    assert json.loads((workdir / "verify.json").read_text())["metrics"]["images"] == 60


def test_a_kl_bound_catches_what_top1_hides(workdir, held_out):
    folder, labels = held_out
    out = run("verify", "-w", str(workdir), "--images", str(folder), "--labels", str(labels), "--max-kl", "1e-6")
    assert out.returncode == 1 and "mean KL" in out.stderr and "> 1e-06" in out.stderr


def test_fp32_graph_agrees_exactly(workdir, held_out):
    folder, _ = held_out
    out = run("verify", "-w", str(workdir), "--candidate", "fp32", "--images", str(folder), "--min-agreement", "100")
    assert out.returncode == 0, out.stderr
    m = json.loads((workdir / "verify.json").read_text())["metrics"]
    assert m["top1_agreement"] == 1.0 and m["max_abs_logit_diff"] < 1e-4


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--labels", "labels.txt", "--images", "imgs"], 2, "labels file 'labels.txt' line 2 is not 'file,label'"),
        (["--images", "nowhere"], 2, "image directory 'nowhere' does not exist"),
        (["--min-agreement", "120", "--images", "imgs"], 2, "--min-agreement is a percentage"),
        (["--candidate", "fp16", "--images", "imgs"], 1, "no model.fp16.onnx in"),
    ],
)
def test_bad_input_is_one_line(workdir, tmp_path, args, code, message):
    (tmp_path / "labels.txt").write_text("file,label\nimg.png,seven\n")
    (tmp_path / "imgs").mkdir()
    shutil.copy(next(CALIB.glob("*.png")), tmp_path / "imgs" / "img.png")
    out = run("verify", "-w", str(workdir), *args, cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_compare_on_known_logits():
    ref = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 4.0]])
    cand = np.array([[3.0, 1.0, 0.0], [2.5, 2.0, 1.0], [1.0, 0.0, 4.0]])
    m = compare(ref, cand, ["a", "b", "c"], {"a": 0, "b": 1, "c": 0})
    assert m["top1_agreement"] == pytest.approx(2 / 3)
    assert m["disagreements"] == [{"image": "b", "reference": 1, "candidate": 0}]
    assert m["max_abs_logit_diff"] == 2.5
    assert m["accuracy_reference"] == pytest.approx(2 / 3) and m["accuracy_candidate"] == pytest.approx(1 / 3)
    assert m["top1_drop_points"] == pytest.approx(100 / 3, abs=1e-3)
    assert m["worst_classes"] == [{"class": 1, "images": 1, "disagreements": 1, "rate": 1.0}]


def test_the_reference_sidecar_is_written_through_its_view_and_reads_back_the_same(tmp_path):
    """ReferenceInfo.write: what verify stores is read back by the same dataclass (no second copy of the layout)."""
    import numpy as np

    from sk_edge import artifacts
    from sk_edge.sidecars import ReferenceInfo

    npz = tmp_path / "reference.npz"
    np.savez_compressed(npz, logits=np.zeros((3, 10), np.float32))
    made_from = {"model": "sknet26-digits", "graph_sha256": "a" * 64}
    info = ReferenceInfo.write(tmp_path / "reference.json", npz, made_from, {"dir": "imgs", "sha256": "b" * 64},
                               "sknet26-digits FP32 in PyTorch (CPU)", "2.14.1", count=3, labelled=2)
    again = ReferenceInfo.from_doc(artifacts.read_json(tmp_path / "reference.json"), tmp_path / "reference.json")
    assert again == info and (info.count, info.labelled, info.made_from) == (3, 2, made_from)
    assert info.npz_sha256 == artifacts.sha256_file(npz)
    assert artifacts.up_to_date(tmp_path / "reference.json", info.key) is not None
