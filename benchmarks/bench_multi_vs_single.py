#!/usr/bin/env python3
"""The paper's claim, measured: does the multi-class detector beat the single-class one?

    python benchmarks/bench_multi_vs_single.py --work_dir=DIR [--seeds=0,1,2]
        [--dataset=deeplesion/synthetic_benchmark] [--data_dir=TFDS_DATA_DIR]
        [--phase=all|train]

Steps, each skipped when its result is already in `--work_dir` (a re-run resumes):
  1. `tfds build` of `--dataset` (default the benchmark config: 500 patients,
     about 250 test key slices) into `--data_dir` (default `DIR/tensorflow_datasets`);
  2. the categorizer (configs/categorize_quickstart.flags) with `--categorizer_k`
     clusters (default 5, the number of planted categories: how k is chosen is
     the categorizer's question, not this one's); the clusters are named from
     the planted categories as bin/quickstart does;
  3. for every seed, the CPU quickstart preset (configs/quickstart.flags)
     trained twice with `--seed`: single-class and multi-class (the clusters as
     classes);
  4. `bin/evaluate_detector` of each run on `--split` (test), with 95% intervals
     by bootstrap over patients;
  5. per seed, the paired comparison (`--compare`); then over all seeds the
     mean paired difference multi - single with its patient-bootstrap interval
     and permutation p-value, the seed-to-seed spread, and Table 1 with
     intervals.
Prints markdown for benchmarks/BENCHMARKS.md and writes `DIR/verdict.json`.
`--phase=train` stops after step 3 (to start the long part early).
"""

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

ARMS = ("single", "multi")


def _bin(name):
    return [sys.executable, os.path.join(REPO, "bin", name)]


def _run(name, command, done=None):
    """Runs `command` unless `done` exists; exits naming the step when it fails. Returns seconds."""
    if done and os.path.exists(done):
        print(f"[{name}] already done ({done})", file=sys.stderr, flush=True)
        return 0.0
    print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
    started = time.time()
    result = subprocess.run(command, cwd=REPO)
    if result.returncode != 0:
        raise SystemExit(f"bench_multi_vs_single: step '{name}' failed "
                         f"(exit code {result.returncode})")
    return time.time() - started


def _truth_csv(data_dir, dataset, given):
    if given:
        return given
    import tensorflow_datasets as tfds

    import tfds_deeplesion  # noqa: F401  Registers `deeplesion`.
    from deeplesion_tf.evaluation import unbookmarked

    config = tfds.builder(dataset, data_dir=data_dir).builder_config
    path = unbookmarked.default_truth_csv(data_dir, config)
    if not path:
        raise SystemExit(f"no truth.csv of {dataset} under {data_dir}/downloads")
    return path


def _prepare(args, data_dir):
    """Steps 1 and 2: the dataset, the pseudo labels and their names."""
    config = args.dataset.split("/")[1]
    built = glob.glob(os.path.join(data_dir, *args.dataset.split("/"), "*", "dataset_info.json"))
    seconds = {"dataset": _run("dataset", [
        os.path.join(os.path.dirname(sys.executable), "tfds"), "build", "deeplesion",
        "--imports", "tfds_deeplesion", "--config", config, "--data_dir", data_dir],
        done=built[0] if built else None)}
    categorize_dir = os.path.join(args.work_dir, "categorize")
    seconds["categorize"] = _run("categorize", _bin("categorize_lesions") + [
        "--flagfile=" + os.path.join(REPO, "configs", "categorize_quickstart.flags"),
        f"--dataset={args.dataset}", f"--data_dir={data_dir}", f"--k={args.categorizer_k}",
        f"--output_dir={categorize_dir}"], done=os.path.join(categorize_dir, "report.json"))

    from deeplesion_tf.categorize import agreement
    from deeplesion_tf.categorize import naming
    from deeplesion_tf.data import label_files

    pseudo_labels = os.path.join(categorize_dir, label_files.PSEUDO_LABELS_FILE)
    truth = _truth_csv(data_dir, args.dataset, args.truth_csv)
    clusters = label_files.read_pseudo_labels(pseudo_labels)
    planted = naming.read_column(truth, "lesion_id", "short_name")
    names = naming.majority_names(clusters, planted)
    names_csv = os.path.join(categorize_dir, "cluster_names_from_truth.csv")
    label_files.write_names(names_csv, names)
    ids = sorted(clusters)
    categorizer = {
        "k": len(set(clusters.values())), "lesions": len(ids),
        "purity": agreement.purity([planted[i] for i in ids], [clusters[i] for i in ids]),
        "nmi": agreement.nmi([planted[i] for i in ids], [clusters[i] for i in ids]),
        "names": {str(k): v for k, v in sorted(names.items())}}
    return pseudo_labels, names_csv, truth, categorizer, seconds


def _model_dir(args, arm, seed):
    return os.path.join(args.work_dir, f"detector_{arm}_seed{seed}")


def _train(args, data_dir, pseudo_labels, names_csv):
    """Step 3: every seed, both arms; seeds outer, so that a partial run has whole pairs."""
    seconds = {}
    extra = {"single": [], "multi": ["--classes=pseudo_labels", f"--pseudo_labels={pseudo_labels}",
                                     f"--class_names={names_csv}"]}
    for seed in args.seeds:
        for arm in ARMS:
            model_dir = _model_dir(args, arm, seed)
            command = _bin("train_detector") + [
                "--flagfile=" + os.path.join(REPO, "configs", "quickstart.flags"),
                f"--dataset={args.dataset}", f"--data_dir={data_dir}", f"--seed={seed}",
                f"--model_dir={model_dir}"] + extra[arm] + (
                [f"--steps={args.steps}"] if args.steps else [])
            # A finished run resumes at its last step and returns at once.
            seconds[f"train_{arm}_seed{seed}"] = _run(f"train {arm} seed {seed}", command)
    return seconds


def _evaluate(args, data_dir, truth_csv):
    """Step 4. Returns {(arm, seed): evaluation dir} and the seconds taken."""
    dirs, seconds = {}, {}
    for seed in args.seeds:
        for arm in ARMS:
            out = os.path.join(args.work_dir, f"eval_{arm}_seed{seed}")
            dirs[arm, seed] = out
            seconds[f"evaluate_{arm}_seed{seed}"] = _run(
                f"evaluate {arm} seed {seed}", _bin("evaluate_detector") + [
                    f"--model_dir={_model_dir(args, arm, seed)}", f"--data_dir={data_dir}",
                    f"--dataset={args.dataset}", f"--split={args.split}", "--categories=truth",
                    f"--truth_csv={truth_csv}",
                    f"--name={arm}-class seed {seed}", f"--output_dir={out}",
                    f"--bootstrap_resamples={args.resamples}", "--num_figures=4"],
                done=os.path.join(out, "metrics.json"))
    return dirs, seconds


def _fmt(value, interval):
    return f"{100 * value:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _p(estimate):
    return "-" if estimate.get("p_value") is None else f"{estimate['p_value']:.3f}"


def _markdown(verdict):
    """The tables for BENCHMARKS.md."""
    from deeplesion_tf.evaluation import report

    lines = [f"Dataset `{verdict['dataset']}` {verdict['split']} split: "
             f"{verdict['num_images']} key slices of "
             f"{verdict['num_patients']} patients; seeds {', '.join(map(str, verdict['seeds']))}; "
             f"categorizer k = {verdict['categorizer']['k']} (purity "
             f"{verdict['categorizer']['purity']:.3f}, NMI {verdict['categorizer']['nmi']:.3f}); "
             f"{verdict['resamples']} bootstrap resamples over patients.", "",
             "| seed | metric | single-class | multi-class | multi - single (points) | p |",
             "|---|---|---|---|---|---|"]
    for row in verdict["per_seed"]:
        for metric in verdict["metrics"]:
            s, m, d = row["single"][metric], row["multi"][metric], row["difference"][metric]
            lines.append(f"| {row['seed']} | {metric} | {_fmt(s['value'], s['interval'])} | "
                         f"{_fmt(m['value'], m['interval'])} | "
                         f"{report.difference_cell(d)} | {_p(d)} |")
    lines += ["", "Pooled over seeds. *Patients*: the mean over seeds of the paired difference, "
              "every seed scored on the same bootstrap resample of patients (how sure the "
              "figure is for these runs); *seeds*: Student's t interval over the per-seed "
              "differences (how sure it is over training runs). A winner only where both "
              "intervals exclude 0 on its side.", "",
              "| metric | single-class, mean of seeds | multi-class, mean of seeds | "
              "multi - single: patients (points) | p | multi - single: seeds (points) | "
              "per-seed differences | single-class per seed | multi-class per seed | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for metric in verdict["metrics"]:
        p = verdict["pooled"][metric]

        def listed(values):
            return ", ".join(f"{100 * v:.1f}" for v in values)

        seeds = ", ".join(f"{100 * v:+.1f}" for v in p["per_seed_differences"])
        over_seeds = report.difference_cell(p["seed_interval"]) if p["seed_interval"] else "-"
        lines.append(f"| {metric} | {_fmt(p['single']['value'], p['single']['interval'])} | "
                     f"{_fmt(p['multi']['value'], p['multi']['interval'])} | "
                     f"{report.difference_cell(p['difference'])} | "
                     f"{_p(p['difference'])} | {over_seeds} | {seeds} | "
                     f"{listed(p['single_per_seed'])} | {listed(p['multi_per_seed'])} | "
                     f"{p['verdict']} |")
    lines += ["", "Table 1 (top-1 accuracy per planted category, mean of seeds, pooled "
              "interval):", "", "| category | images | single-class | multi-class | "
              "multi - single (points) |", "|---|---|---|---|---|"]
    for row in verdict["table1"]:
        lines.append(f"| {row['name']} | {row['size']} | "
                     f"{_fmt(row['single']['value'], row['single']['interval'])} | "
                     f"{_fmt(row['multi']['value'], row['multi']['interval'])} | "
                     f"{report.difference_cell(row['difference'])} |")
    return "\n".join(lines)


def _verdict(args, dirs, categorizer):
    """Step 5 on the evaluations' saved per-image scores."""
    from deeplesion_tf.evaluation import intervals
    from deeplesion_tf.evaluation import runner

    scores = {key: intervals.load_image_scores(d) for key, d in dirs.items()}
    per_seed = []
    for seed in args.seeds:
        comparison_dir = os.path.join(args.work_dir, f"compare_seed{seed}")
        runner.write_comparison([dirs["single", seed], dirs["multi", seed]],
                                ["single-class", "multi-class"], comparison_dir,
                                resamples=args.resamples, seed=args.bootstrap_seed)
        with open(os.path.join(comparison_dir, runner.COMPARISON_FILE)) as f:
            comparison = json.load(f)
        per_seed.append({"seed": seed, "single": comparison["models"][0],
                         "multi": comparison["models"][1],
                         "difference": comparison["differences"][0]})
    pooled = intervals.compare([scores["single", s] for s in args.seeds],
                               [scores["multi", s] for s in args.seeds],
                               resamples=args.resamples, seed=args.bootstrap_seed)
    first = scores["single", args.seeds[0]]
    verdict = {
        "dataset": args.dataset, "split": args.split, "seeds": args.seeds,
        "resamples": args.resamples,
        "num_images": first.num_images, "num_patients": first.num_patients,
        "categorizer": categorizer, "metrics": list(intervals.SUMMARY_METRICS),
        "per_seed": per_seed, "pooled": {}, "table1": []}
    for metric in intervals.SUMMARY_METRICS:
        differences = [r["difference"][metric]["value"] for r in per_seed]
        over_seeds = intervals.seed_interval(differences)
        verdict["pooled"][metric] = {
            "single": pooled.a[metric], "multi": pooled.b[metric],
            "difference": pooled.difference[metric], "seed_interval": over_seeds,
            "per_seed_differences": differences,
            "single_per_seed": [r["single"][metric]["value"] for r in per_seed],
            "multi_per_seed": [r["multi"][metric]["value"] for r in per_seed],
            "verdict": intervals.pooled_verdict(pooled.difference[metric], over_seeds,
                                                "multi-class better", "single-class better")}
    for name, size in first.category_sizes():
        metric = intervals.category_metric(name)
        verdict["table1"].append({"name": name, "size": size, "single": pooled.a[metric],
                                  "multi": pooled.b[metric],
                                  "difference": pooled.difference[metric]})
    return verdict


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--dataset", default="deeplesion/synthetic_benchmark")
    parser.add_argument("--data_dir", default=None,
                        help="TFDS data dir (default WORK_DIR/tensorflow_datasets)")
    parser.add_argument("--truth_csv", default=None,
                        help="truth.csv of the PACS (default: the synthetic build's)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--steps", type=int, default=None, help="Detector steps (the preset's).")
    parser.add_argument("--categorizer_k", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--bootstrap_seed", type=int, default=0)
    parser.add_argument("--phase", choices=["all", "train"], default="all")
    args = parser.parse_args()
    if len(args.seeds) < 1:
        parser.error("--seeds: at least one")
    started = time.time()
    data_dir = args.data_dir or os.path.join(args.work_dir, "tensorflow_datasets")
    os.makedirs(args.work_dir, exist_ok=True)
    pseudo_labels, names_csv, truth_csv, categorizer, seconds = _prepare(args, data_dir)
    seconds.update(_train(args, data_dir, pseudo_labels, names_csv))
    if args.phase == "train":
        return
    dirs, evaluate_seconds = _evaluate(args, data_dir, truth_csv)
    seconds.update(evaluate_seconds)
    verdict = _verdict(args, dirs, categorizer)
    verdict["seconds"] = seconds
    verdict["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"Python {platform.python_version()}")
    with open(os.path.join(args.work_dir, "verdict.json"), "w") as f:
        json.dump(verdict, f, indent=1)
    print(_markdown(verdict))
    print(f"\nwall time of this invocation {(time.time() - started) / 60:.1f} min; steps: "
          + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if v))


if __name__ == "__main__":
    main()
