#!/usr/bin/env python3
"""Classify camera or video frames with an sk-edge build, with an FPS overlay.

    python examples/camera_classify.py -w workdir --source 0                  # first camera, window
    python examples/camera_classify.py -w workdir --source clip.mp4 --out annotated.avi --no-window

Inference runs through the TensorRT engine (sk_edge.runtime.Engine) when TensorRT and an
engine are there, otherwise through the same precision's ONNX graph on ONNX Runtime, and
says which. Frames get exactly the preprocessing the model was exported, calibrated and
verified with (sk_edge.images.to_tensor with the settings in export.json). One JSON line
per frame goes to stdout (frame, class, probability, milliseconds); a summary to stderr.
Needs OpenCV (pip install opencv-python, or JetPack's python3-opencv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sk_edge.errors import SkEdgeError
from sk_edge.images import to_tensor
from sk_edge.workdir import GRAPH_NAMES, built_engines, engine_name, load_engine, load_export, load_graph


def load_classifier(workdir: Path, precision: str):
    """(callable: NCHW float32 -> logits, description)."""
    engines = built_engines(workdir, (precision,))  # the GPU engine before a DLA one
    engine = workdir / (engines[0][1] if engines else engine_name(precision))
    if engines:
        try:
            from sk_edge.runtime import Engine

            load_engine(workdir, precision, name=engine.name)  # refuses an engine built from an older graph
            return Engine(engine), f"TensorRT engine {engine.name}"
        except SkEdgeError as exc:
            print(f"cannot use {engine.name} ({exc}); falling back to ONNX Runtime", file=sys.stderr)
    from sk_edge.backends.onnxruntime import judging_runner

    graph = workdir / GRAPH_NAMES[precision]
    if not graph.is_file():
        raise SkEdgeError(f"no {engine.name} or {graph.name} in '{workdir}'; run `sk-edge build -w {workdir} --precision {precision}`")
    load_graph(workdir, precision)
    return judging_runner(graph), f"{graph.name} on ONNX Runtime (no TensorRT engine here)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-w", "--workdir", type=Path, default=Path("workdir"))
    parser.add_argument("--source", default="0", help="camera index or video file / stream URL")
    parser.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8")
    parser.add_argument("--out", type=Path, help="write the annotated frames to this video file (MJPG)")
    parser.add_argument("--no-window", action="store_true", help="do not open a preview window")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: until the source ends)")
    args = parser.parse_args()
    try:
        import cv2
    except ImportError:
        print("error: OpenCV is needed (pip install opencv-python)", file=sys.stderr)
        return 2
    try:
        export = load_export(args.workdir)
        pre = export.preprocess
        names = export.class_names or []
        classify, how = load_classifier(args.workdir, args.precision)
    except SkEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    source = int(args.source) if args.source.isdigit() else args.source
    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        print(f"error: cannot open video source '{args.source}'; pass a camera index or a readable video file", file=sys.stderr)
        return 2
    print(f"classifying frames from {args.source} with {how}", file=sys.stderr)
    writer, frames, fps = None, 0, 0.0
    classes: dict[int, int] = {}
    started = time.perf_counter()
    while not args.max_frames or frames < args.max_frames:
        ok, frame = capture.read()
        if not ok:
            break
        t0 = time.perf_counter()
        x = to_tensor(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)), pre)[None]
        logits = classify(x)[0].astype(np.float64)
        ms = (time.perf_counter() - t0) * 1e3
        prob = np.exp(logits - logits.max())
        prob /= prob.sum()
        top = int(prob.argmax())
        classes[top] = classes.get(top, 0) + 1
        fps = 0.9 * fps + 0.1 * (1000.0 / ms) if frames else 1000.0 / ms  # smoothed, preprocessing included
        name = names[top] if top < len(names) else f"class {top}"
        print(json.dumps({"frame": frames, "class": top, **({"name": name} if names else {}),
                          "probability": round(float(prob[top]), 4), "ms": round(ms, 2)}))
        cv2.putText(frame, f"{name} ({prob[top]:.0%})  {fps:.0f} FPS", (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 255, 0), 1)
        if args.out:
            if writer is None:
                writer = cv2.VideoWriter(str(args.out), cv2.VideoWriter_fourcc(*"MJPG"), 25, (frame.shape[1], frame.shape[0]))
            writer.write(frame)
        if not args.no_window:
            cv2.imshow("sk-edge", frame)
            if cv2.waitKey(1) & 0xFF in (27, ord("q")):
                break
        frames += 1
    capture.release()
    if writer is not None:
        writer.release()
    if not args.no_window:
        cv2.destroyAllWindows()
    seconds = time.perf_counter() - started
    print(f"{frames} frames in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} FPS end to end); classes {dict(sorted(classes.items()))}",
          file=sys.stderr)
    return 0 if frames else 1


if __name__ == "__main__":
    sys.exit(main())
