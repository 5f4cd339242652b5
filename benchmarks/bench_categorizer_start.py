#!/usr/bin/env python3
"""The categorizer's own purity from random weights vs from SimCLR pretraining (issue 25).

    python benchmarks/bench_categorizer_start.py --work_dir=DIR --data_dir=TFDS_DATA_DIR
        [--dataset=deeplesion/synthetic_benchmark] [--seeds=0,1,2]

The dataset must be built (bench_pretraining.py builds it). Steps, each skipped
when its result is already in `--work_dir`:
  1. `bin/pretrain_trunk` (configs/pretrain_quickstart.flags, group normalisation) on
     the unlabelled slices of the `--splits` patients, into `pretrain/`; or `--trunk`
     names one already trained (bench_pretraining.py's `WORK_DIR/pretrain/trunk`);
  2. per seed, `bin/categorize_lesions` (configs/categorize_quickstart.flags) on the
     same splits with one encoder (`--ensemble_size=1`: members loaded from one
     trunk would be the same network), `--k` fixed (the planted count, so that
     the comparison is of the features, not of the choice of k) and, in both arms,
     the trunk's group normalisation (`--backbone_norm=group --trunk_norm=group`;
     SimCLR cannot train a trunk without normalisation: bin/pretrain_trunk says
     why), from random weights and from `--weights=TRUNK`. Every iteration fine-tunes
     the previous iteration's network, as the paper's loop does; the two arms
     differ only in where the first iteration starts;
  3. purity and NMI of each run's final clusters against the planted categories
     (truth.csv); per seed the paired difference in purity with a bootstrap over
     patients (1000 resamples), and over seeds a t interval (`intervals.seed_interval`).
Prints markdown for benchmarks/BENCHMARKS.md and writes `DIR/categorizer_start.json`.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench_multi_vs_single as base  # noqa: E402  The same steps.

STARTS = ("random", "simclr")


def _pretrain(args, truth):
    from deeplesion_tf.data import synthetic_location

    if args.trunk:
        return args.trunk
    out = os.path.join(args.work_dir, "pretrain")
    base._run("pretrain", base._bin("pretrain_trunk") + [
        "--flagfile=" + os.path.join(REPO, "configs", "pretrain_quickstart.flags"),
        f"--splits={args.splits.replace('+', ',')}",
        f"--dicom_dir={synthetic_location.dicom_dir(truth)}", f"--output_dir={out}"],
        done=os.path.join(out, "report.json"))
    return os.path.join(out, "trunk")


def _categorize(args, start, seed, trunk):
    out = os.path.join(args.work_dir, f"categorize_{start}_seed{seed}")
    command = base._bin("categorize_lesions") + [
        "--flagfile=" + os.path.join(REPO, "configs", "categorize_quickstart.flags"),
        f"--dataset={args.dataset}", f"--data_dir={args.data_dir}", f"--splits={args.splits}",
        "--ensemble_size=1", "--backbone_norm=group", "--trunk_norm=group", f"--k={args.k}",
        f"--seed={seed}",
        f"--output_dir={out}"]
    if start == "simclr":
        command.append(f"--weights={trunk}")
    seconds = base._run(f"categorize {start} seed {seed}", command,
                        done=os.path.join(out, "report.json"))
    return out, seconds


def weighted_purity(planted: np.ndarray, clusters: np.ndarray, weights: np.ndarray) -> float:
    """Purity with lesion weights: sum over clusters of their heaviest category, over the total."""
    table = np.zeros((clusters.max() + 1, planted.max() + 1))
    np.add.at(table, (clusters, planted), weights)
    return float(table.max(axis=1).sum() / table.sum())


def _scores(out, truth_rows):
    from deeplesion_tf.categorize import agreement
    from deeplesion_tf.data import label_files

    clusters = label_files.read_pseudo_labels(os.path.join(out, label_files.PSEUDO_LABELS_FILE))
    ids = sorted(clusters)
    planted = [truth_rows[i][0] for i in ids]
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    return {"ids": ids, "clusters": [clusters[i] for i in ids],
            "purity": agreement.purity(planted, [clusters[i] for i in ids]),
            "nmi": agreement.nmi(planted, [clusters[i] for i in ids]),
            "iterations": len(report["iterations"]), "converged": report.get("converged")}


def _paired(a, b, truth_rows, resamples, seed):
    """b - a in purity, bootstrap over patients (both runs cluster the same lesions)."""
    assert a["ids"] == b["ids"]
    categories = {c: i for i, c in enumerate(sorted({truth_rows[i][0] for i in a["ids"]}))}
    planted = np.array([categories[truth_rows[i][0]] for i in a["ids"]])
    patients = np.array([truth_rows[i][1] for i in a["ids"]])
    unique, patient_of = np.unique(patients, return_inverse=True)
    ca, cb = np.asarray(a["clusters"]), np.asarray(b["clusters"])
    ca, cb = np.unique(ca, return_inverse=True)[1], np.unique(cb, return_inverse=True)[1]
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(resamples):
        counts = np.bincount(rng.integers(0, len(unique), len(unique)), minlength=len(unique))
        weights = counts[patient_of].astype(np.float64)
        differences.append(weighted_purity(planted, cb, weights)
                           - weighted_purity(planted, ca, weights))
    low, high = np.percentile(differences, [2.5, 97.5])
    return {"value": b["purity"] - a["purity"], "interval": [float(low), float(high)]}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--dataset", default="deeplesion/synthetic_benchmark")
    parser.add_argument("--splits", default="train+validation")
    parser.add_argument("--k", type=int, default=5, help="Fixed k (the planted categories).")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trunk", help="A SimCLR trunk already trained on these splits "
                        "(group normalisation); default: pretrain one into WORK_DIR/pretrain.")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.time()
    truth = base._truth_csv(args.data_dir, args.dataset, None)
    import csv

    with open(truth) as f:
        truth_rows = {r["lesion_id"]: (r["short_name"], r["patient_index"])
                      for r in csv.DictReader(f)}
    trunk = _pretrain(args, truth)
    runs, seconds = {}, {}
    for seed in seeds:
        for start in STARTS:
            out, seconds[f"{start}_seed{seed}"] = _categorize(args, start, seed, trunk)
            runs[(start, seed)] = _scores(out, truth_rows)

    from deeplesion_tf.evaluation import intervals

    paired = {seed: _paired(runs[("random", seed)], runs[("simclr", seed)], truth_rows,
                            args.resamples, seed) for seed in seeds}
    over_seeds = {metric: intervals.seed_interval(
        [runs[("simclr", s)][metric] - runs[("random", s)][metric] for s in seeds])
        for metric in ("purity", "nmi")}
    rows = ["| seed | purity, random | purity, SimCLR start | difference (points), 95% over "
            "patients | NMI, random | NMI, SimCLR start | iterations (random / SimCLR) |",
            "|---|---|---|---|---|---|---|"]
    for seed in seeds:
        r, s, d = runs[("random", seed)], runs[("simclr", seed)], paired[seed]
        rows.append(f"| {seed} | {100 * r['purity']:.1f} | {100 * s['purity']:.1f} | "
                    f"{100 * d['value']:+.1f} [{100 * d['interval'][0]:+.1f}, "
                    f"{100 * d['interval'][1]:+.1f}] | {r['nmi']:.3f} | {s['nmi']:.3f} | "
                    f"{r['iterations']} / {s['iterations']} |")
    for metric, scale in (("purity", 100), ("nmi", 1)):
        o = over_seeds[metric]
        if o:
            rows.append(f"\nOver seeds, {metric} SimCLR - random: {scale * o['value']:+.3g} "
                        f"[{scale * o['interval'][0]:+.3g}, {scale * o['interval'][1]:+.3g}] "
                        f"(t interval, {len(seeds)} seeds)")
    markdown = "\n".join(rows)
    print(markdown)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "date": time.strftime("%Y-%m-%d"), "dataset": args.dataset, "splits": args.splits,
              "k": args.k, "trunk": trunk, "seeds": seeds, "wall_seconds": time.time() - started,
              "run_seconds": seconds,
              "runs": {f"{s}_seed{seed}": {k: v for k, v in runs[(s, seed)].items()
                                           if k not in ("ids", "clusters")}
                       for (s, seed) in runs},
              "paired_purity": {str(k): v for k, v in paired.items()},
              "over_seeds": over_seeds, "markdown": markdown}
    with open(os.path.join(args.work_dir, "categorizer_start.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
