"""The main job end to end on the embedded default (what `make demo` runs; no download, no ../shared).

1. writes generated FER2013 and keypoints CSVs (OUTPUT/data),
2. explores them (OUTPUT/explore/<task>: plots + summary.json),
3. trains both models on an embedded local Ray with Ray Train (OUTPUT/<task>/model),
4. evaluates them (OUTPUT/<task>/eval: metrics.json, reports, confusion matrix, RMSE plots),
5. annotates a small folder of generated photos plus matplotlib's real grace_hopper.jpg
   (OUTPUT/annotate: Parquet, annotated images, summary plots, summary.json),
6. annotates the same folder again with the models shipped in the package, trained on real faces
   (OUTPUT/annotate_shipped; the demo's emotion model where no emotion model ships): the demo's own
   models learnt generated faces only.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from facepipe.cli import run_main



def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output", default="demo_output", help="output folder")
    p.add_argument("--keypoints-epochs", type=int, default=5, help="keypoints training epochs")
    p.add_argument("--emotion-epochs", type=int, default=6, help="emotion training epochs")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers per task")
    p.add_argument("--photos", type=int, default=8, help="generated photos to annotate (plus grace_hopper.jpg)")
    p.add_argument("--resume", action="store_true", help="continue interrupted training runs in OUTPUT")
    return p


def main(args: argparse.Namespace) -> dict:
    from facepipe.logs import native_lines_aside

    with native_lines_aside(True, "demo"):  # Ray's C++ warning lines, kept aside
        return _demo(args)


def _demo(args: argparse.Namespace) -> dict:
    from facepipe.annotate import annotate, annotate_demo
    from facepipe.model_dir import shipped_model
    from facepipe.data.synth import default_data
    from facepipe.evaluate import evaluate
    from facepipe.explore import explore
    from facepipe.runtime import init_ray
    from facepipe.train import TrainConfig, remove_run, train

    t0 = time.perf_counter()
    out = Path(args.output)
    data = default_data(out / "data")
    for task, path in data.items():
        explore(path, out / "explore" / task)
    init_ray()
    summary: dict = {}
    models = {}
    for task, epochs in (("keypoints", args.keypoints_epochs), ("emotion", args.emotion_epochs)):
        cfg = TrainConfig(task=task, data=str(data[task]), output=str(out), epochs=epochs, num_workers=args.num_workers, resume=args.resume)
        if not args.resume:
            remove_run(cfg)  # the demo starts afresh unless asked to resume
        result = train(cfg)
        metrics = evaluate(result.model_dir, data[task], out / task / "eval")
        models[task] = result.model_dir
        summary[task] = {k: metrics[k] for k in ("rmse_px", "accuracy", "split", "images") if k in metrics}
    ann = annotate_demo(out / "annotate", models["keypoints"], models["emotion"], n_generated=args.photos)
    summary["annotate"] = {k: ann[k] for k in ("images", "faces", "status_counts") if k in ann}
    shipped = {t: shipped_model(t) for t in ("keypoints", "emotion")}
    if shipped["keypoints"] is not None:
        used = {"keypoints_model": shipped["keypoints"], "emotion_model": shipped["emotion"] or models["emotion"]}
        ann = annotate([out / "annotate" / "images"], out / "annotate_shipped", plots="all", **used)
        summary["annotate_shipped"] = {**{k: str(v) for k, v in used.items()}, **{k: ann[k] for k in ("images", "faces", "status_counts") if k in ann}}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"demo: keypoints RMSE {summary['keypoints']['rmse_px']:.2f} px, emotion accuracy {summary['emotion']['accuracy']:.3f}, "
          f"annotated {summary['annotate']} in {summary['seconds']:.0f} s -> {out}", flush=True)
    if "annotate_shipped" in summary:
        print(f"demo: {out / 'annotate'} used the models trained just now on generated faces; {out / 'annotate_shipped'} used "
              f"{summary['annotate_shipped']['keypoints_model']} and {summary['annotate_shipped']['emotion_model']}", flush=True)
    return summary


def run(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run; the exit code."""
    return run_main("demo", get_args_parser, main, argv, prog, errors=())


if __name__ == "__main__":
    sys.exit(run())
