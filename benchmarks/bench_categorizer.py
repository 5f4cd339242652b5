#!/usr/bin/env python3
"""The categorizer against the planted categories, over PACS draws, sizes and seeds.

The categorizer never reads `truth.csv`; this script does, afterwards. Two modes:

Score one run:

    python benchmarks/bench_categorizer.py --output_dir=OUT \
        --truth='DATA_DIR/downloads/synthetic_pacs/*/truth.csv'

The grid (issue 19): the default synthetic PACS (`deeplesion/synthetic`, 100
patients, generator seed 0) with `--default_seeds` of the categorizer, and
`--pacs_seeds` other generator seeds at each of `--sizes` patients, each built
as a user builds an export (`bin/make_synthetic_pacs`, then `tfds build
deeplesion --config pacs --manual_dir ...`) and categorized with
`--categorizer_seeds`, all with `--flagfile` unchanged:

    python benchmarks/bench_categorizer.py --work_dir=/tmp/categorizer_grid

Resumable: a PACS, a build or a run that is already in `--work_dir` is reused.
Writes `grid.json` (one row per run) and prints, per size, how many runs reach
purity >= 0.90 and NMI >= 0.80 against the planted categories, the k chosen,
iterations, convergence, wall time, and means with their spread; the table is
the one in benchmarks/BENCHMARKS.md.
"""

import argparse
import csv
import glob
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from deeplesion_tf.categorize import agreement  # noqa: E402
from deeplesion_tf.data import label_files, synthetic_location  # noqa: E402

PURITY_TARGET = 0.90
NMI_TARGET = 0.80


def score(output_dir: str, truth_csv: str) -> dict:
    """Purity and NMI of a categorizer run's clusters against the planted categories."""
    with open(truth_csv, newline="") as f:
        truth = {r["lesion_id"]: int(r["category"]) for r in csv.DictReader(f)}
    table = label_files.read_pseudo_labels(
        os.path.join(output_dir, label_files.PSEUDO_LABELS_FILE))
    missing = [lesion for lesion in table if lesion not in truth]
    if missing:
        raise ValueError(f"{len(missing)} lesions of {output_dir} are not in {truth_csv}, "
                         f"e.g. {missing[0]}")
    planted = [truth[lesion] for lesion in table]
    clusters = list(table.values())
    with open(os.path.join(output_dir, "report.json")) as f:
        report = json.load(f)
    purity, nmi = agreement.purity(planted, clusters), agreement.nmi(planted, clusters)
    return {"lesions": len(table), "k": report["final_k"],
            "iterations": len(report["iterations"]), "converged": report["converged"],
            "purity": purity, "nmi": nmi,
            "reached": purity >= PURITY_TARGET and nmi >= NMI_TARGET,
            "warnings": report.get("warnings", []), "report": report}


def _tool(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _run(command, log_path):
    """Runs `command`, its output to `log_path`; exits naming the log if it fails."""
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}; see {log_path}")


def _built(data_dir: str, config: str) -> bool:
    return bool(glob.glob(os.path.join(data_dir, "deeplesion", config, "*",
                                       "dataset_info.json")))


def _prepare_default(work_dir: str):
    """The default synthetic PACS, built by the `synthetic` config: (data_dir, dataset, truth)."""
    data_dir = os.path.join(work_dir, "default", "tensorflow_datasets")
    if not _built(data_dir, "synthetic"):
        os.makedirs(data_dir, exist_ok=True)
        _run([_tool("tfds"), "build", "deeplesion", "--imports", "tfds_deeplesion",
              "--config", "synthetic", "--data_dir", data_dir],
             os.path.join(work_dir, "default", "build.log"))
    truth = synthetic_location.find_truth_csv(data_dir)
    if not truth:
        sys.exit(f"no truth.csv under {data_dir}/downloads/synthetic_pacs")
    return data_dir, "deeplesion/synthetic", truth


def _prepare_draw(work_dir: str, pacs_seed: int, patients: int):
    """A PACS of another generator seed and size, built as an export (`pacs` config)."""
    draw = os.path.join(work_dir, f"pacs_seed{pacs_seed}_patients{patients}")
    pacs = os.path.join(draw, "pacs")
    if not os.path.exists(os.path.join(pacs, "bookmarks.csv")):
        partial = pacs + ".incomplete"
        if os.path.exists(partial):
            subprocess.run(["rm", "-rf", partial], check=True)
        os.makedirs(draw, exist_ok=True)
        _run([sys.executable, os.path.join(REPO, "bin", "make_synthetic_pacs"),
              f"--output_dir={partial}", f"--num_patients={patients}", f"--seed={pacs_seed}",
              "--format=pacs"], os.path.join(draw, "make.log"))
        os.rename(partial, pacs)
    data_dir = os.path.join(draw, "tensorflow_datasets")
    if not _built(data_dir, "pacs"):
        _run([_tool("tfds"), "build", "deeplesion", "--imports", "tfds_deeplesion",
              "--config", "pacs", "--manual_dir", pacs, "--data_dir", data_dir],
             os.path.join(draw, "build.log"))
    return data_dir, "deeplesion/pacs", os.path.join(pacs, "truth.csv")


def _categorize(data_dir, dataset, out, seed, flagfile, extra_flags):
    """One categorizer run (skipped when its report exists); its wall time in seconds."""
    timing = os.path.join(out, "wall_seconds.txt")
    if os.path.exists(os.path.join(out, "report.json")) and os.path.exists(timing):
        return float(open(timing).read())
    os.makedirs(out, exist_ok=True)
    started = time.time()
    _run([sys.executable, os.path.join(REPO, "bin", "categorize_lesions"),
          f"--flagfile={flagfile}", f"--dataset={dataset}", f"--data_dir={data_dir}",
          f"--output_dir={out}", f"--seed={seed}"] + list(extra_flags),
         os.path.join(out, "categorize.log"))
    seconds = time.time() - started
    with open(timing, "w") as f:
        f.write(f"{seconds:.1f}")
    return seconds


def _mean_spread(values, digits=3):
    """`mean (min-max)` of a list of numbers, or '-'."""
    if not values:
        return "-"
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _percent_interval(successes: int, trials: int) -> str:
    """`60%, 95% CI 15-95%`: the exact (Clopper-Pearson) interval of a proportion of runs."""
    from scipy.stats import binomtest

    interval = binomtest(successes, trials).proportion_ci(0.95, method="exact")
    return (f"{100 * successes / trials:.0f}%, 95% CI {100 * interval.low:.0f}-"
            f"{100 * interval.high:.0f}%")


def summarize(rows) -> str:
    """The markdown table of the grid: one line per group of runs, and per size over groups."""
    groups = {}
    for row in rows:
        groups.setdefault(row["group"], []).append(row)
    by_size = {}
    for row in rows:
        by_size.setdefault(row.get("patients"), set()).add(row["group"])
    for patients, names in by_size.items():
        if patients is not None and len(names) > 1:
            groups[f"all runs at {patients} patients"] = [
                r for r in rows if r.get("patients") == patients]
    lines = ["| PACS | runs | reach purity >= 0.90 and NMI >= 0.80 | k chosen | iterations "
             "(converged) | purity, mean (range) | NMI, mean (range) | wall s, mean (range) |",
             "|---|---|---|---|---|---|---|---|"]
    for group, runs in groups.items():
        ks = ", ".join(f"{k}: {sum(r['k'] == k for r in runs)}"
                       for k in sorted({r["k"] for r in runs}))
        iterations = ", ".join(str(r["iterations"]) for r in runs)
        converged = sum(r["converged"] for r in runs)
        reached = sum(r["reached"] for r in runs)
        lines.append(
            f"| {group} | {len(runs)} "
            f"| **{reached} of {len(runs)}** ({_percent_interval(reached, len(runs))}) "
            f"| {ks} | {iterations} ({converged} of {len(runs)}) "
            f"| {_mean_spread([r['purity'] for r in runs])} "
            f"| {_mean_spread([r['nmi'] for r in runs])} "
            f"| {_mean_spread([r['wall_seconds'] for r in runs], digits=0)} |")
    return "\n".join(lines)


def _ints(text):
    return [int(v) for v in text.split(",") if v.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", help="score this one run (with --truth)")
    parser.add_argument("--truth", help="truth.csv of that run's PACS (a glob is expanded)")
    parser.add_argument("--work_dir", help="the grid: where PACS draws, builds and runs go")
    parser.add_argument("--flagfile",
                        default=os.path.join(REPO, "configs", "categorize_quickstart.flags"))
    parser.add_argument("--default_seeds", default="0,1,2,3,4",
                        help="categorizer seeds on the default synthetic PACS")
    parser.add_argument("--pacs_seeds", default="11,12,13,14,15",
                        help="generator seeds of the other PACS draws")
    parser.add_argument("--sizes", default="40,100,300", help="patients per draw")
    parser.add_argument("--categorizer_seeds", default="0",
                        help="categorizer seeds on each other draw")
    parser.add_argument("--extra_flags", default="",
                        help="space-separated flags added to every categorizer run")
    args = parser.parse_args()

    if args.output_dir:
        if not args.truth:
            parser.error("--output_dir needs --truth")
        result = score(args.output_dir, sorted(glob.glob(args.truth))[0])
        print(f"lesions {result['lesions']}, k found {result['k']}, iterations "
              f"{result['iterations']}, converged {result['converged']}")
        print(f"against the planted categories: purity {result['purity']:.3f}, "
              f"NMI {result['nmi']:.3f}")
        for it in result["report"]["iterations"]:
            print(f"  iteration {it['iteration']}: k={it['k']} sizes={it['cluster_sizes']} "
                  f"purity_prev={it['purity']} nmi_prev={it['nmi']} "
                  f"test_acc={it['test_accuracy']:.3f}")
        for warning in result["warnings"]:
            print("  warning:", warning)
        return
    if not args.work_dir:
        parser.error("give --work_dir (the grid) or --output_dir and --truth (one run)")

    extra = args.extra_flags.split()
    # Each PACS is prepared when its first run comes, so results start early.
    plan = [("default, 100 patients", 100, _prepare_default, (args.work_dir,), "default", seed)
            for seed in _ints(args.default_seeds)]
    plan += [(f"other draws, {patients} patients", patients, _prepare_draw,
              (args.work_dir, pacs_seed, patients), f"pacs_seed{pacs_seed}_patients{patients}",
              seed)
             for patients in _ints(args.sizes) for pacs_seed in _ints(args.pacs_seeds)
             for seed in _ints(args.categorizer_seeds)]
    rows = []
    for number, (group, patients, prepare, prepare_args, draw, seed) in enumerate(plan, start=1):
        data_dir, dataset, truth = prepare(*prepare_args)
        out = os.path.join(args.work_dir, "runs", f"{draw}_seed{seed}")
        seconds = _categorize(data_dir, dataset, out, seed, args.flagfile, extra)
        result = score(out, truth)
        result.pop("report")
        rows.append({"group": group, "patients": patients, "draw": draw, "seed": seed,
                     "wall_seconds": seconds, **result})
        print(f"[{number}/{len(plan)}] {draw} seed {seed}: k={result['k']} "
              f"purity {result['purity']:.3f} NMI {result['nmi']:.3f} "
              f"{'reached' if result['reached'] else 'missed'} ({seconds:.0f} s)", flush=True)
        with open(os.path.join(args.work_dir, "grid.json"), "w") as f:
            json.dump({"flagfile": args.flagfile, "extra_flags": extra, "runs": rows}, f,
                      indent=2)
    print(summarize(rows))


if __name__ == "__main__":
    main()
