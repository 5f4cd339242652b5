#!/usr/bin/env python3
"""Does pretraining on our own data help the detector start? Random vs two pretrainings (issue 25).

    python benchmarks/bench_pretraining.py --work_dir=DIR [--seeds=0,1,2]
        [--dataset=deeplesion/synthetic_benchmark] [--data_dir=TFDS_DATA_DIR]

Steps, each skipped when its result is already in `--work_dir` (a re-run resumes):
  1. `tfds build` of `--dataset` (the benchmark config: 500 patients, about 250
     test key slices);
  2. the categorizer (configs/categorize_quickstart.flags, `--k=5` as in
     bench_multi_vs_single.py) on the **train and validation** splits only, so
     that neither its pseudo labels nor its saved trunk have seen a test slice;
     it writes the pseudo labels and `categorize/trunk`;
  3. `bin/pretrain_trunk` (configs/pretrain_quickstart.flags: SimCLR on the
     unlabelled slices of the train and validation patients) into `pretrain/`;
  4. for every seed, the detector preset (configs/quickstart.flags, same steps)
     per class arm (`--kinds`) and start (`--starts`): from random weights, from
     `--weights=categorize/trunk` and from `--weights=pretrain/trunk`;
  5. `bin/evaluate_detector` of each on the test split (patient-bootstrap intervals);
  6. per class arm, each pretrained start - random paired on the same test slices, per seed
     and pooled over seeds (patients and seeds intervals, as
     bench_multi_vs_single.py); and multi - single within each start.
Prints markdown for benchmarks/BENCHMARKS.md and writes `DIR/pretraining.json`.
"""

import argparse
import json
import os
import platform
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import bench_multi_vs_single as base  # noqa: E402  The same steps and cells.

KINDS = ("single", "multi")
STARTS = ("random", "categorizer", "simclr")
PRETRAINED = {"categorizer": "from the categorizer's network",
              "simclr": "from SimCLR on unlabelled slices"}
_METRICS = ("detection_accuracy", "ap50", "froc_mean_0.5_to_4", "froc_1", "froc_4")


def _name(kind, start, seed):
    return f"{kind}_{start}_seed{seed}"


def _categorize(args, data_dir):
    out = os.path.join(args.work_dir, "categorize")
    base._run("categorize", base._bin("categorize_lesions") + [
        "--flagfile=" + os.path.join(REPO, "configs", "categorize_quickstart.flags"),
        f"--dataset={args.dataset}", f"--data_dir={data_dir}", f"--k={args.categorizer_k}",
        "--splits=train+validation", f"--output_dir={out}"],
        done=os.path.join(out, "report.json"))
    from deeplesion_tf.categorize import agreement, naming
    from deeplesion_tf.data import label_files

    pseudo_labels = os.path.join(out, label_files.PSEUDO_LABELS_FILE)
    truth = base._truth_csv(data_dir, args.dataset, None)
    clusters = label_files.read_pseudo_labels(pseudo_labels)
    planted = naming.read_column(truth, "lesion_id", "short_name")
    names_csv = os.path.join(out, "cluster_names_from_truth.csv")
    label_files.write_names(names_csv, naming.majority_names(clusters, planted))
    ids = sorted(clusters)
    summary = {"lesions": len(ids), "k": len(set(clusters.values())),
               "purity": agreement.purity([planted[i] for i in ids], [clusters[i] for i in ids]),
               "nmi": agreement.nmi([planted[i] for i in ids], [clusters[i] for i in ids])}
    return out, pseudo_labels, names_csv, truth, summary


def _pretrain(args, truth):
    """SimCLR on the unlabelled slices of the train and validation patients (the preset)."""
    from deeplesion_tf.data import synthetic_location

    out = os.path.join(args.work_dir, "pretrain")
    base._run("pretrain", base._bin("pretrain_trunk") + [
        "--flagfile=" + os.path.join(REPO, "configs", "pretrain_quickstart.flags"),
        f"--dicom_dir={synthetic_location.dicom_dir(truth)}", f"--output_dir={out}"],
        done=os.path.join(out, "report.json"))
    with open(os.path.join(out, "report.json")) as f:
        report = json.load(f)
    return out, {"slices": report["data"]["slices_used"], "patients": report["data"]["patients"],
                 "steps": report["settings"]["steps"],
                 "final_nt_xent": report["history"]["loss"][-1],
                 "final_partner_accuracy": report["history"]["accuracy"][-1]}


def _train_and_evaluate(args, data_dir, categorize_dir, pretrain_dir, pseudo_labels, names_csv,
                        truth):
    dirs, seconds = {}, {}
    extra = {"single": [], "multi": ["--classes=pseudo_labels", f"--pseudo_labels={pseudo_labels}",
                                     f"--class_names={names_csv}"]}
    trunk = os.path.join(categorize_dir, "trunk")
    start_flags = {"random": [], "categorizer": [f"--weights={trunk}"],
                   "simclr": [f"--weights={os.path.join(pretrain_dir or '', 'trunk')}"]}
    for seed in args.seeds:  # Seeds outer: a partial run has whole sets of arms.
        for start in args.starts:
            for kind in args.kinds:
                name = _name(kind, start, seed)
                model_dir = os.path.join(args.work_dir, "detector_" + name)
                train = base._bin("train_detector")
                seconds["train_" + name] = base._run("train " + name, train + [
                    "--flagfile=" + os.path.join(REPO, "configs", "quickstart.flags"),
                    f"--dataset={args.dataset}", f"--data_dir={data_dir}", f"--seed={seed}",
                    f"--model_dir={model_dir}"] + extra[kind] + start_flags[start] + (
                    [f"--steps={args.steps}"] if args.steps else []))
                out = os.path.join(args.work_dir, "eval_" + name)
                seconds["evaluate_" + name] = base._run("evaluate " + name, base._bin(
                    "evaluate_detector") + [
                    f"--model_dir={model_dir}", f"--data_dir={data_dir}",
                    f"--dataset={args.dataset}", "--split=test", "--categories=truth",
                    f"--truth_csv={truth}", f"--name={name}", f"--output_dir={out}",
                    f"--bootstrap_resamples={args.resamples}", "--num_figures=2"],
                    done=os.path.join(out, "metrics.json"))
                dirs[kind, start, seed] = out
    return dirs, seconds


def _paired(scores, seeds, a, b, resamples, seed, b_better, a_better):
    """b - a over `seeds`: per seed, pooled over patients, and over seeds."""
    from deeplesion_tf.evaluation import intervals

    per_seed = [intervals.compare([scores[a, s]], [scores[b, s]], resamples=resamples, seed=seed)
                for s in seeds]
    pooled = intervals.compare([scores[a, s] for s in seeds], [scores[b, s] for s in seeds],
                               resamples=resamples, seed=seed)
    rows = {}
    for metric in _METRICS:
        differences = [c.difference[metric]["value"] for c in per_seed]
        over_seeds = intervals.seed_interval(differences)
        rows[metric] = {
            "a": pooled.a[metric], "b": pooled.b[metric], "difference": pooled.difference[metric],
            "seed_interval": over_seeds, "per_seed_differences": differences,
            "per_seed": [c.difference[metric] for c in per_seed],
            "a_per_seed": [c.a[metric]["value"] for c in per_seed],
            "b_per_seed": [c.b[metric]["value"] for c in per_seed],
            "verdict": intervals.pooled_verdict(pooled.difference[metric], over_seeds,
                                                b_better, a_better)}
    return rows


def _markdown(result):
    from deeplesion_tf.evaluation import report

    def pct(values):
        return ", ".join(f"{100 * v:.1f}" for v in values)

    lines = [f"Dataset `{result['dataset']}` test split: {result['num_images']} key slices of "
             f"{result['num_patients']} patients; seeds {', '.join(map(str, result['seeds']))}; "
             f"categorizer on train+validation ({result['categorizer']['lesions']} lesions, "
             f"k = {result['categorizer']['k']}, purity {result['categorizer']['purity']:.3f}, "
             f"NMI {result['categorizer']['nmi']:.3f} against the planted categories); "
             f"{result['resamples']} bootstrap resamples over patients.", ""]
    if result.get("pretraining"):
        t = result["pretraining"]
        lines[0] += (f" SimCLR on {t['slices']} unlabelled slices of {t['patients']} train and "
                     f"validation patients, {t['steps']} steps (NT-Xent {t['final_nt_xent']:.3f}, "
                     f"partner found {t['final_partner_accuracy']:.2f}).")
    for title, rows in result["comparisons"].items():
        lines += [f"**{title}** (metrics in %; difference in points):", "",
                  "| metric | first, mean of seeds | second, mean of seeds | second - first: "
                  "patients | p | second - first: seeds | per-seed differences | first per seed "
                  "| second per seed | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
        for metric, r in rows.items():
            p = r["difference"].get("p_value")
            lines.append(
                f"| {metric} | {base._fmt(r['a']['value'], r['a']['interval'])} | "
                f"{base._fmt(r['b']['value'], r['b']['interval'])} | "
                f"{report.difference_cell(r['difference'])} | "
                f"{'-' if p is None else f'{p:.3f}'} | "
                f"{report.difference_cell(r['seed_interval']) if r['seed_interval'] else '-'} | "
                f"{', '.join(f'{100 * v:+.1f}' for v in r['per_seed_differences'])} | "
                f"{pct(r['a_per_seed'])} | {pct(r['b_per_seed'])} | {r['verdict']} |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--dataset", default="deeplesion/synthetic_benchmark")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--steps", type=int, default=None, help="Detector steps (the preset's).")
    parser.add_argument("--kinds", default="single,multi",
                        type=lambda s: [v for v in s.split(",") if v],
                        help="Class arms: single, multi or both.")
    parser.add_argument("--starts", default="random,categorizer,simclr",
                        type=lambda s: [v for v in s.split(",") if v],
                        help="Starts compared: random and one or both pretrainings.")
    parser.add_argument("--categorizer_k", type=int, default=5)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--bootstrap_seed", type=int, default=0)
    args = parser.parse_args()
    if not args.kinds or set(args.kinds) - set(KINDS):
        parser.error(f"--kinds: one or both of {', '.join(KINDS)}")
    if "random" not in args.starts or len(args.starts) < 2 or set(args.starts) - set(STARTS):
        parser.error(f"--starts: random and one or more of {', '.join(STARTS[1:])}")
    started = time.time()
    data_dir = args.data_dir or os.path.join(args.work_dir, "tensorflow_datasets")
    os.makedirs(args.work_dir, exist_ok=True)
    config = args.dataset.split("/")[1]
    import glob

    built = glob.glob(os.path.join(data_dir, *args.dataset.split("/"), "*", "dataset_info.json"))
    base._run("dataset", [os.path.join(os.path.dirname(sys.executable), "tfds"), "build",
                          "deeplesion", "--imports", "tfds_deeplesion", "--config", config,
                          "--data_dir", data_dir], done=built[0] if built else None)
    categorize_dir, pseudo_labels, names_csv, truth, categorizer = _categorize(args, data_dir)
    pretrain_dir, pretraining = (_pretrain(args, truth) if "simclr" in args.starts
                                 else (None, None))
    dirs, seconds = _train_and_evaluate(args, data_dir, categorize_dir, pretrain_dir,
                                        pseudo_labels, names_csv, truth)
    from deeplesion_tf.evaluation import intervals

    scores = {key: intervals.load_image_scores(d) for key, d in dirs.items()}
    kinds = args.kinds
    starts = args.starts
    keyed = {start: {(kind, s): scores[kind, start, s] for kind in kinds for s in args.seeds}
             for start in starts}
    by_kind = {kind: {(start, s): scores[kind, start, s] for start in starts for s in args.seeds}
               for kind in kinds}
    common = dict(resamples=args.resamples, seed=args.bootstrap_seed)
    comparisons = {}
    for kind in kinds:
        for start in starts[1:]:
            comparisons[f"{kind}-class: {PRETRAINED[start]} (second) vs from random weights "
                        "(first)"] = _paired(by_kind[kind], args.seeds, "random", start,
                                             b_better="pretrained better",
                                             a_better="random better", **common)
    for start in starts if len(kinds) == 2 else ():
        comparisons[f"from {start} weights: multi-class (second) vs single-class (first)"] = (
            _paired(keyed[start], args.seeds, "single", "multi", b_better="multi-class better",
                    a_better="single-class better", **common))
    first = scores[kinds[0], STARTS[0], args.seeds[0]]
    result = {"dataset": args.dataset, "seeds": args.seeds, "resamples": args.resamples,
              "kinds": kinds, "starts": starts, "steps": args.steps, "pretraining": pretraining,
              "num_images": first.num_images, "num_patients": first.num_patients,
              "categorizer": categorizer, "comparisons": comparisons, "seconds": seconds,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}"}
    with open(os.path.join(args.work_dir, "pretraining.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(_markdown(result))
    print(f"\nwall time of this invocation {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
