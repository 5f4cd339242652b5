#!/usr/bin/env python3
"""Scores a categorizer run against the synthetic PACS's planted categories.

The categorizer never reads `truth.csv`; this script does, afterwards:

    bin/categorize_lesions --flagfile=configs/categorize_quickstart.flags \
        --data_dir=DATA_DIR --output_dir=OUT
    python benchmarks/bench_categorizer.py --output_dir=OUT --truth=DATA_DIR/downloads/synthetic_pacs/*/truth.csv

Prints the k found, the iterations, and purity and NMI against the planted
categories (targets: purity >= 0.90, NMI >= 0.80).
"""

import argparse
import csv
import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deeplesion_tf.categorize import agreement  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--truth", required=True, help="truth.csv (a glob is expanded)")
    args = parser.parse_args()
    truth_path = sorted(glob.glob(args.truth))[0]
    with open(truth_path, newline="") as f:
        truth = {r["lesion_id"]: int(r["category"]) for r in csv.DictReader(f)}
    with open(os.path.join(args.output_dir, "pseudo_labels.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    planted = [truth[r["lesion_id"]] for r in rows]
    clusters = [int(r["cluster"]) for r in rows]
    report = json.loads(open(os.path.join(args.output_dir, "report.json")).read())
    print(f"lesions {len(rows)}, k found {report['final_k']}, iterations "
          f"{len(report['iterations'])}, converged {report['converged']}")
    print(f"against the planted categories: purity {agreement.purity(planted, clusters):.3f}, "
          f"NMI {agreement.nmi(planted, clusters):.3f}")
    for it in report["iterations"]:
        print(f"  iteration {it['iteration']}: k={it['k']} sizes={it['cluster_sizes']} "
              f"purity_prev={it['purity']} nmi_prev={it['nmi']} test_acc={it['test_accuracy']:.3f}")


if __name__ == "__main__":
    main()
