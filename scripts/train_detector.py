"""Train the shipped shape detector: a small YOLO fitted with ultralytics on ``render_scene`` images.

There is no general-purpose detector on the package registries, and the suite's detection and
counting tasks use :func:`regrpo.tasks.scenes.render_scene` images, so we train one on exactly that
distribution::

    python scripts/train_detector.py --epochs 12 --train-images 800 --seed 0 \
        --out regrpo/data/detector/shapes-yolo.pt

Steps: write a YOLO dataset (PNG images + normalised ``class cx cy w h`` labels) to a temporary folder
from ``--seed``; train ``--model`` (default ``yolov8n.yaml``: from scratch, no pretrained weights)
with ultralytics; validate on *fresh* scenes rendered from ``--seed + 1_000_003`` (never seen in
training) and report mAP50 / mAP50-95; strip the optimizer state (a few MB) and write the checkpoint
plus a JSON summary beside it. Offline throughout: see ``regrpo.tools.ultralytics_offline``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from regrpo.tasks.scenes import SHAPE_KINDS, render_scene
from regrpo.tools.ultralytics_offline import import_ultralytics

VALIDATION_SEED_OFFSET = 1_000_003
"""Validation scenes come from ``seed + VALIDATION_SEED_OFFSET``: a stream training never draws from."""


def write_dataset(root: Path, split: str, n_images: int, seed: int, *, vary_size: bool) -> None:
    """Render ``n_images`` scenes to ``root/images/<split>`` and YOLO labels to ``root/labels/<split>``."""
    rng = np.random.default_rng(seed)
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(n_images):
        width, height = (
            (int(rng.integers(360, 641)), int(rng.integers(270, 481))) if vary_size else (480, 360)
        )
        scene = render_scene(rng, width=width, height=height)
        Image.fromarray(scene.image).save(images / f"{i:05d}.png")
        rows = []
        for obj in scene.objects:
            x1, y1, x2, y2 = obj.box
            cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
            w, h = (x2 - x1) / width, (y2 - y1) / height
            rows.append(f"{SHAPE_KINDS.index(obj.kind)} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (labels / f"{i:05d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))


def write_data_yaml(root: Path) -> Path:
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(SHAPE_KINDS))
    path = root / "data.yaml"
    path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return path


def scaled_model_yaml(model: str, width: float, root: Path) -> Path:
    """``model``'s architecture at its own depth but width multiple ``width``, written as a yaml file."""
    import yaml
    from ultralytics.nn.tasks import guess_model_scale
    from ultralytics.utils.checks import check_yaml

    config = yaml.safe_load(Path(check_yaml(model.replace(guess_model_scale(model), "", 1))).read_text())
    depth, _, max_channels = config.pop("scales")[guess_model_scale(model)]
    config.update(depth_multiple=depth, width_multiple=width, max_channels=max_channels, nc=len(SHAPE_KINDS))
    path = root / f"{Path(model).stem}-w{width:g}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-images", type=int, default=800)
    parser.add_argument("--val-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="data seed of the training scenes")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--model", default="yolov8n.yaml", help="an ultralytics model yaml (trained from scratch)"
    )
    parser.add_argument(
        "--width",
        type=float,
        default=None,
        help="override the model's width multiple (yolov8n: 0.25) for a smaller net",
    )
    parser.add_argument(
        "--init", type=Path, default=None, help="continue from this checkpoint instead of scratch"
    )
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA index such as '0'")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("regrpo/data/detector/shapes-yolo.pt"))
    args = parser.parse_args(argv)

    started = time.perf_counter()
    ultralytics = import_ultralytics()
    from ultralytics import YOLO
    from ultralytics.utils.torch_utils import strip_optimizer

    with tempfile.TemporaryDirectory(prefix="regrpo-detector-") as tmp:
        root = Path(tmp)
        write_dataset(root, "train", args.train_images, args.seed, vary_size=True)
        write_dataset(root, "val", args.val_images, args.seed + VALIDATION_SEED_OFFSET, vary_size=False)
        data = write_data_yaml(root)
        print(f"dataset written in {time.perf_counter() - started:.0f} s", flush=True)

        if args.init is not None:
            model = YOLO(str(args.init))
        else:
            model = YOLO(str(scaled_model_yaml(args.model, args.width, root)) if args.width else args.model)
        model.train(
            data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, device=args.device,
            workers=args.workers, seed=args.seed, deterministic=True, project=str(root / "runs"),
            name="train",
            plots=False, val=False, cache="ram", close_mosaic=max(1, args.epochs // 4), warmup_epochs=1,
            fliplr=0.5, hsv_h=0.0, amp=False, verbose=False,
        )  # fmt: skip
        weights = root / "runs" / "train" / "weights" / "last.pt"
        strip_optimizer(str(weights))
        train_s = time.perf_counter() - started

        metrics = YOLO(str(weights)).val(
            data=str(data), split="val", imgsz=args.imgsz, batch=args.batch, device=args.device,
            plots=False, verbose=False, project=str(root / "runs"), name="val",
        )  # fmt: skip
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, args.out)

    summary = {
        "command": "python " + " ".join(sys.argv),
        "ultralytics": ultralytics.__version__,
        "model": args.model,
        "width_multiple": args.width,
        "init": str(args.init) if args.init else None,
        "classes": list(SHAPE_KINDS),
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "train_images": args.train_images,
        "train_seed": args.seed,
        "val_images": args.val_images,
        "val_seed": args.seed + VALIDATION_SEED_OFFSET,
        "map50": round(float(metrics.box.map50), 4),
        "map50_95": round(float(metrics.box.map), 4),
        "per_class_map50_95": {
            name: round(float(metrics.box.maps[i]), 4) for i, name in enumerate(SHAPE_KINDS)
        },
        "train_wall_s": round(train_s),
        "total_wall_s": round(time.perf_counter() - started),
        "checkpoint_bytes": args.out.stat().st_size,
    }
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
