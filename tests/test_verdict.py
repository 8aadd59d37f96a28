"""Every build ends with a verdict (issue 14): on a user's own models, from a plain `--images DIR`.

Real models (the M=3 SKNet trained outside the project, a timm SelectiveKernel model), real image
files in class folders, real ONNX Runtime sessions, the CLI as a subprocess.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli, write_class_folders
from shared_model import M3_ARGS, M3_CHECKPOINT
from sk_edge.evaluation import HOLDOUT_FRACTION, MIN_JUDGE_IMAGES, is_held_out, split_paths
from sk_edge.images import find_images

M3 = ["--model", "sknet26", *[a for k, v in M3_ARGS.items() for a in ("--model-arg", f"{k}={v}")],
      "--num-classes", "10", "--input-size", "64", "--weights", str(M3_CHECKPOINT)]


def summary_block(stderr: str) -> str:
    return stderr[stderr.index("== sk-edge build"):]


@pytest.fixture(scope="module")
def m3_build(tmp_path_factory, class_folders):
    """`sk-edge build --precision int8 --images DIR` of the M=3 SKNet, DIR in class folders, nothing else."""
    wd = tmp_path_factory.mktemp("m3") / "wd"
    out = run_cli("build", "--precision", "int8", *M3, "--images", str(class_folders), "-w", str(wd))
    return wd, out


def test_the_holdout_split_is_fixed_disjoint_and_independent_of_the_other_files(class_folders, tmp_path):
    paths = find_images(class_folders)
    calib, held = split_paths(paths, class_folders, HOLDOUT_FRACTION)
    assert set(calib).isdisjoint(held) and len(calib) + len(held) == len(paths)
    assert abs(len(held) / len(paths) - HOLDOUT_FRACTION) < 0.05  # 600 files: the hash splits close to 20 %
    # The same split in any order, and a file keeps its side when others are added or removed.
    again = split_paths(list(reversed(paths)), class_folders, HOLDOUT_FRACTION)[1]
    assert sorted(again) == sorted(held)
    subset = tmp_path / "subset"
    for p in paths[::3]:
        (subset / p.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(p, subset / p.parent.name / p.name)
    sub_held = {p.relative_to(subset) for p in split_paths(find_images(subset), subset, HOLDOUT_FRACTION)[1]}
    assert sub_held == {p.relative_to(class_folders) for p in held if p in paths[::3]}
    assert is_held_out("3/img_0001.png", 1.0) and not is_held_out("3/img_0001.png", 0.0)


def test_our_m3_sknet_gets_a_verdict_on_the_held_out_part_of_its_images(m3_build, class_folders):
    wd, out = m3_build
    assert out.returncode == 0, out.stderr
    assert "verify skipped" not in out.stderr
    doc = json.loads((wd / "verify.json").read_text())
    calib = json.loads((wd / "calib.json").read_text())
    held = split_paths(find_images(class_folders), class_folders, HOLDOUT_FRACTION)[1]
    # Calibration took only the other part; the held-out part, every image of it, judged.
    assert calib["inputs"]["images"]["holdout"]["held_out"] == len(held)
    assert calib["inputs"]["images"]["used"] == len(find_images(class_folders)) - len(held)
    assert doc["images"]["holdout"]["fraction"] == HOLDOUT_FRACTION and doc["metrics"]["images"] == len(held) >= 100
    with np.load(wd / "reference.npz") as stored:
        judged = set(stored["names"].tolist())
    assert judged == {p.relative_to(class_folders).as_posix() for p in held}
    # Class folders are labels: accuracy is part of the verdict, with no labels file.
    assert doc["images"]["labels_source"].startswith(f"class folders in {class_folders}")
    assert doc["metrics"]["labelled_images"] == len(held) and "top1_drop_points" in doc["metrics"]
    assert doc["reference_kind"] == "pytorch" and doc["passed"]
    block = summary_block(out.stderr)
    assert "sk-edge build INT8: PASS" in block
    # Layers the search kept in floating point were chosen on the judging images: the block says so.
    sensitivity = wd / "sensitivity.json"
    kept = (json.loads(sensitivity.read_text()).get("budget") or {}).get("kept_float", []) if sensitivity.exists() else []
    assert ("caution    " in block) == bool(kept)
    assert f"judged on  {len(held)} from the 20% of {class_folders} held out from calibration" in block
    assert "precision  INT8 for" in block and "latency    not measured: no engine here" in block
    md = (wd / "verify.md").read_text()
    assert "held out from calibration (never calibrated on)" in md and "| reference | PyTorch, run live |" in md


def test_a_stored_reference_is_used_without_images_and_rerun_when_stale(m3_build, tmp_path):
    wd, _ = m3_build
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy)
    built = json.loads((copy / "verify.json").read_text())
    out = run_cli("verify", "-w", str(copy))
    assert out.returncode == 0, out.stderr
    doc = json.loads((copy / "verify.json").read_text())
    assert doc["reference_kind"] == "pytorch-stored" and "| reference | PyTorch outputs stored on the host |" in (
        copy / "verify.md").read_text()
    # The stored pixels, normalised again, are the inputs the build judged: the same numbers exactly.
    for key in ("top1_agreement", "kl_mean", "max_abs_logit_diff", "accuracy_reference", "accuracy_candidate"):
        assert doc["metrics"][key] == built["metrics"][key], key

    # A stored reference for another export is never used: here (a user's model, no images named) it is an error.
    sidecar = json.loads((copy / "reference.json").read_text())
    sidecar["inputs"]["state_dict_sha256"] = "0" * 64
    (copy / "reference.json").write_text(json.dumps(sidecar))
    stale = run_cli("verify", "-w", str(copy))
    assert stale.returncode == 1 and "Traceback" not in stale.stderr
    (line,) = stale.stderr.strip().splitlines()[-1:]
    assert "reference.npz' holds PyTorch outputs for another state_dict_sha256" in line and "pass --images DIR" in line

    # A damaged reference.npz is refused, never read.
    shutil.copytree(wd, tmp_path / "damaged")
    with open(tmp_path / "damaged" / "reference.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    out = run_cli("verify", "-w", str(tmp_path / "damaged"))
    assert out.returncode == 1 and "reference.npz' does not match its reference.json" in out.stderr


def test_a_timm_selective_kernel_model_gets_a_verdict(tmp_path, class_folders):
    import timm
    import torch

    from conftest import randomize_batchnorm

    model = timm.create_model("skresnet18", num_classes=10)
    randomize_batchnorm(model)
    torch.save(model.state_dict(), tmp_path / "skresnet18.pth")
    out = run_cli("build", "--precision", "int8", "--model", "timm:skresnet18", "--num-classes", "10", "--input-size", "64",
                  "--weights", str(tmp_path / "skresnet18.pth"), "--images", str(class_folders), "-w", str(tmp_path / "wd"))
    doc = json.loads((tmp_path / "wd" / "verify.json").read_text())
    assert out.returncode == (0 if doc["passed"] else 1), out.stderr
    assert doc["model"]["name"] == "timm:skresnet18" and doc["images"]["holdout"] and doc["metrics"]["images"] >= 100
    assert f"sk-edge build INT8: {'PASS' if doc['passed'] else 'FAIL'}" in summary_block(out.stderr)


def test_too_few_images_to_judge_is_refused_before_any_work(tmp_path):
    few = write_class_folders(tmp_path / "few", 300)  # 20 % held out: about 60 images
    held = len(split_paths(find_images(few), few, HOLDOUT_FRACTION)[1])
    assert held < MIN_JUDGE_IMAGES
    out = run_cli("build", "--precision", "int8", *M3, "--images", str(few), "-w", str(tmp_path / "wd"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert f"only {held} images would judge this build" in line and f"at least {MIN_JUDGE_IMAGES}" in line
    assert "--eval-images DIR" in line and "--no-verify" in line
    assert not (tmp_path / "wd").exists()


def test_random_weights_have_no_reference_to_judge_against(tmp_path, class_folders):
    out = run_cli("build", "--precision", "fp16", "--model", "sknet26", "--input-size", "64", "--images", str(class_folders),
                  "-w", str(tmp_path / "wd"))
    assert out.returncode == 2 and "random weights: there is no trained PyTorch reference" in out.stderr
    assert not (tmp_path / "wd").exists()


def test_without_labels_the_agreement_budget_drives_the_layer_search(tmp_path):
    """Flat folder, no labels: the budget is top-1 agreement with FP32, and the search keeps layers until it holds."""
    from sk_edge.evaluation import JudgeImages
    from sk_edge.sensitivity import Budget, analyze_sensitivity, needs_budget
    from shared_model import export_m3

    from sk_edge.quantize import CalibrationOptions, calibrate, quantize_model

    flat = tmp_path / "flat"
    flat.mkdir()
    for p in find_images(write_class_folders(tmp_path / "src", 600)):
        shutil.copy(p, flat / f"{p.parent.name}_{p.name}")
    wd = tmp_path / "wd"
    export_m3(wd)
    calibrate(wd, flat, CalibrationOptions(num_images=200, holdout=HOLDOUT_FRACTION))
    quantize_model(wd, "int8", "fp16")
    judge = JudgeImages(flat, None, HOLDOUT_FRACTION)
    assert judge.labels() == (None, None)
    over, score = needs_budget(wd, judge, None, Budget(min_agreement=100.0))
    assert over and score["top1_agreement"] < 1.0  # INT8 changes at least one held-out image
    doc = analyze_sensitivity(wd, judge, None, count=None, min_agreement=100.0, max_float_share=1.0, alone=False)
    budget = doc["budget"]
    assert budget["max_top1_drop"] is None and budget["min_agreement"] == 100.0
    assert budget["kept_float"] and budget["result"]["top1_agreement"] == 1.0
    assert budget["steps"][0]["top1_agreement"] == score["top1_agreement"]
    with pytest.raises(Exception, match="needs labelled images"):
        from sk_edge.sensitivity import Evaluator, fit_budget, load_eval_set

        evaluator = Evaluator(wd, load_eval_set(wd, judge))
        fit_budget(evaluator, doc["layers"], Budget(max_top1_drop=0.5))


def test_bench_min_speedup_is_a_latency_verdict(m3_build):
    wd, _ = m3_build
    common = ["bench", "-w", str(wd), "--backends", "torch,onnxruntime", "--precisions", "int8", "--iterations", "5",
              "--warmup", "1"]
    slow = run_cli(*common, "--min-speedup", "1000")
    assert slow.returncode == 1 and "Traceback" not in slow.stderr
    line = slow.stderr.strip().splitlines()[-1]
    assert "bench FAILED: ONNX Runtime INT8 is" in line and "against PyTorch FP32 on CPU: misses --min-speedup 1000" in line
    doc = json.loads((wd / "bench.json").read_text())
    c = doc["speedup_verdict"]["comparisons"][0]
    assert f"({c['candidate_ms']:.2f} ms vs {c['baseline_ms']:.2f} ms)" in line and not doc["speedup_verdict"]["passed"]
    fast = run_cli(*common, "--min-speedup", "0.001")
    assert fast.returncode == 0, fast.stderr
    assert "latency verdict PASS" in fast.stderr and "Latency verdict: PASS" in fast.stdout

    # Without a PyTorch row there is nothing to compare with: a failure, not a pass.
    alone = run_cli("bench", "-w", str(wd), "--backends", "onnxruntime", "--precisions", "int8", "--iterations", "5",
                    "--warmup", "1", "--min-speedup", "1")
    assert alone.returncode == 1 and "no FP32 measurement on CPU at batch 1" in alone.stderr and "include torch in --backends" in alone.stderr


def test_int8_against_fp16_says_which_is_faster(m3_build):
    from sk_edge.bench import precision_comparison

    wd, _ = m3_build
    out = run_cli("quantize", "-w", str(wd), "--precision", "fp16")
    assert out.returncode == 0, out.stderr
    out = run_cli("bench", "-w", str(wd), "--backends", "onnxruntime", "--precisions", "int8,fp16", "--iterations", "5",
                  "--warmup", "1")
    assert out.returncode == 0, out.stderr
    rows = json.loads((wd / "bench.json").read_text())["results"]
    ms = {r["config"]["precision"]: r["stats"]["p50_ms"] for r in rows}
    (line,) = precision_comparison(rows, "onnxruntime")
    ratio = ms["fp16"] / ms["int8"]
    assert line.startswith("ONNX Runtime on CPU, batch 1: INT8 is") and f"({ms['int8']:.2f} ms vs {ms['fp16']:.2f} ms)" in line
    assert ("faster than FP16" in line) == (ratio > 1.05) and ("slower than FP16" in line) == (ratio < 0.95)
    assert precision_comparison(rows, "tensorrt") == []  # no engine rows: nothing said about engines


def test_build_from_without_stored_outputs_names_what_judges_it(m3_build, tmp_path):
    wd, _ = m3_build
    copy = tmp_path / "wd"
    shutil.copytree(wd, copy)
    (copy / "reference.json").unlink()
    missing = run_cli("verify", "-w", str(copy))
    assert missing.returncode == 1 and "reference.npz' does not match its reference.json (one is missing" in missing.stderr
    (copy / "reference.npz").unlink()
    out = run_cli("build", "--from", str(copy), "--precision", "int8")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "the work directory has no stored PyTorch outputs" in out.stderr and "--eval-images DIR" in out.stderr
    refused = run_cli("build", "--from", str(copy), "--precision", "int8", "--images", str(copy))
    assert refused.returncode == 2 and "--images, --labels and preprocessing options are not used" in refused.stderr


def _logits(top1: np.ndarray, classes: int = 10) -> np.ndarray:
    """Logits whose argmax is ``top1`` (one-hot scaled, so every other metric stays finite)."""
    out = np.zeros((len(top1), classes), dtype=np.float32)
    out[np.arange(len(top1)), top1] = 5.0
    return out


@pytest.mark.parametrize("candidate_correct, passes", [(965, True), (964, False)])
def test_verify_and_the_accuracy_budget_judge_a_drop_on_the_boundary_alike(candidate_correct, passes):
    # 97.0 % -> 96.5 % is a drop of exactly 0.5 points; as (0.970 - 0.965) * 100 it was 0.5000000000000004, which
    # the accuracy budget (sensitivity, build's fit) refused while verify, rounding, passed the same build.
    from sk_edge.sensitivity import Budget, EvalSet
    from sk_edge.verify import VerifyOptions, compare, verdict

    labels = np.zeros(1000, dtype=np.int64)
    reference, candidate = np.zeros(1000, dtype=np.int64), np.zeros(1000, dtype=np.int64)
    reference[970:] = 1  # 970 correct
    candidate[candidate_correct:] = 2
    ref_logits, cand_logits = _logits(reference), _logits(candidate)
    score = EvalSet(np.zeros((1000, 1)), labels, ref_logits).score(cand_logits)
    assert Budget(max_top1_drop=0.5).met(score) is passes
    names = [f"{i}.png" for i in range(1000)]
    metrics = compare(ref_logits, cand_logits, names, dict(zip(names, labels.tolist())))
    assert metrics["top1_drop_points"] == score["top1_drop_points"]
    broken = verdict(metrics, VerifyOptions(min_agreement=0.0, max_top1_drop=0.5))
    assert (not broken) is passes, broken


@pytest.mark.parametrize("agreeing, passes", [(29, True), (28, False)])
def test_an_agreement_on_the_threshold_passes_both_gates(agreeing, passes):
    # 29 of 100 is 0.29, and 0.29 * 100 is 28.999999999999996 in floating point: under a 29 % threshold.
    from sk_edge.sensitivity import Budget, EvalSet
    from sk_edge.verify import VerifyOptions, compare, verdict

    reference = np.zeros(100, dtype=np.int64)
    candidate = np.where(np.arange(100) < agreeing, 0, 1)
    score = EvalSet(np.zeros((100, 1)), None, _logits(reference)).score(_logits(candidate))
    assert Budget(min_agreement=29.0).met(score) is passes
    metrics = compare(_logits(reference), _logits(candidate), [f"{i}" for i in range(100)], None)
    broken = verdict(metrics, VerifyOptions(min_agreement=29.0))
    assert (not broken) is passes, broken
