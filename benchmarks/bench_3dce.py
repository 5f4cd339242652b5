#!/usr/bin/env python3
"""3DCE at CPU size: the quickstart detector with M = 1 against M = 3 (9 slices), same steps.

    python benchmarks/bench_3dce.py --work_dir=DIR [--seeds=0] [--steps=800]

Steps, each skipped when its result is already in `--work_dir` (a re-run resumes):
  1. `tfds build deeplesion --config synthetic_3dce` (the synthetic default's PACS, 4
     slices stored on each side) into `DIR/tensorflow_datasets`;
  2. per seed, configs/quickstart.flags trained on it with M = 1 and
     configs/3dce_quickstart.flags with M = 3 (the only difference), `--steps` each,
     timed: seconds per step;
  3. `bin/evaluate_detector` of each on the test split (patient-bootstrap intervals),
     then the paired comparison (`--compare`: M = 3 minus M = 1).
Prints the markdown for benchmarks/BENCHMARKS.md.
"""

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = (("m1", "configs/quickstart.flags"), ("m3", "configs/3dce_quickstart.flags"))


def _run(*command):
    start = time.perf_counter()
    subprocess.run(list(command), check=True, cwd=REPO)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    work = os.path.abspath(args.work_dir)
    data_dir = os.path.join(work, "tensorflow_datasets")
    tfds = os.path.join(os.path.dirname(sys.executable), "tfds")
    if not os.path.isdir(os.path.join(data_dir, "deeplesion", "synthetic_3dce")):
        _run(tfds, "build", "deeplesion", "--imports", "tfds_deeplesion", "--config",
             "synthetic_3dce", "--data_dir", data_dir)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        evals = []
        for arm, preset in ARMS:
            model_dir = os.path.join(work, f"{arm}_seed{seed}")
            timing = os.path.join(model_dir, "bench_seconds.json")
            if not os.path.exists(timing):
                seconds = _run(sys.executable, "bin/train_detector", f"--flagfile={preset}",
                               "--dataset=deeplesion/synthetic_3dce", f"--data_dir={data_dir}",
                               f"--model_dir={model_dir}", f"--steps={args.steps}",
                               f"--seed={seed}")
                with open(timing, "w") as f:
                    json.dump({"seconds": seconds, "steps": args.steps}, f)
            eval_dir = os.path.join(work, f"eval_{arm}_seed{seed}")
            if not os.path.exists(os.path.join(eval_dir, "metrics.json")):
                _run(sys.executable, "bin/evaluate_detector", f"--model_dir={model_dir}",
                     f"--data_dir={data_dir}", "--dataset=deeplesion/synthetic_3dce",
                     "--split=test", f"--output_dir={eval_dir}", "--categories=none",
                     "--num_figures=0")
            evals.append(eval_dir)
            with open(timing) as f:
                rows.append((seed, arm, json.load(f), json.load(open(
                    os.path.join(eval_dir, "metrics.json")))))
        compare_dir = os.path.join(work, f"compare_seed{seed}")
        if not os.path.exists(os.path.join(compare_dir, "comparison.json")):
            _run(sys.executable, "bin/evaluate_detector", f"--compare={','.join(evals)}",
                 "--compare_names=M=1,M=3", f"--output_dir={compare_dir}")
        with open(os.path.join(compare_dir, "comparison.json")) as f:
            comparison = json.load(f)
        difference = comparison["differences"][0]
        for metric in ("detection_accuracy", "froc_4", "froc_mean_0.5_to_4"):
            d = difference[metric]
            print(f"seed {seed} M=3 - M=1 {metric}: {100 * d['value']:+.1f} "
                  f"[{100 * d['interval'][0]:+.1f}, {100 * d['interval'][1]:+.1f}], "
                  f"p {d['p_value']:.3f}")
    print("| seed | M | s / step | top-1 (%) | sens@4 (%) | FROC mean 0.5-4 (%) |")
    print("|---|---|---|---|---|---|")
    for seed, arm, timing, metrics in rows:
        intervals = metrics["intervals"]

        def cell(name):
            e = intervals[name]
            return (f"{100 * e['value']:.1f} [{100 * e['interval'][0]:.1f}, "
                    f"{100 * e['interval'][1]:.1f}]")

        print(f"| {seed} | {arm[1:]} | {timing['seconds'] / timing['steps']:.2f} | "
              f"{cell('detection_accuracy')} | {cell('froc_4')} | "
              f"{cell('froc_mean_0.5_to_4')} |")


if __name__ == "__main__":
    main()
