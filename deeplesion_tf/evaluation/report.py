"""`report.md`: the paper's tables and figures for one model, or several side by side.

With two models (single-class and multi-class, evaluated on the same split
and categories) the per-category table is the paper's Table 1.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

from deeplesion_tf.evaluation import intervals

Run = Tuple[str, Mapping]  # (model name, metrics.json)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


def _cell(m: Mapping, metric: str, value: Optional[float]) -> str:
    """`83.3 [72.9, 91.7]` where `m` has the metric's interval, else the plain percentage."""
    estimate = (m.get("intervals") or {}).get(metric)
    if not estimate or estimate.get("interval") is None:
        return _percent(value)
    return intervals.as_percent(estimate)


def difference_cell(estimate: Optional[Mapping]) -> str:
    """A paired difference in points: `+2.1 [-3.0, +7.4]`."""
    return intervals.as_percent(estimate, signed=True)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(runs: Sequence[Run]) -> str:
    """Sec. 3's accuracy beside AP@0.5 and the FROC, one row per model."""
    rates = list(runs[0][1]["froc"]["sensitivity_at_fp"])
    header = (["Model", "Images", "Accuracy (%)", "AP@0.5 (%)"] +
              [f"Sens@{r} (%)" for r in rates] + ["FROC mean 0.5-4 (%)", "ms / image"])
    rows = []
    for name, m in runs:
        froc = m["froc"]
        latency = m.get("latency_ms_per_image")
        rows.append([name, m["num_images"], _cell(m, "detection_accuracy",
                                                   m["detection_accuracy"]),
                     _cell(m, "ap50", m["ap50"])] +
                    [_cell(m, f"froc_{r}", froc["sensitivity_at_fp"].get(r)) for r in rates] +
                    [_cell(m, "froc_mean_0.5_to_4", froc["mean_0.5_to_4"]),
                     "-" if latency is None else f"{latency:.1f}"])
    return _table(header, rows)


_DIFFERENCE_ROWS = (("Accuracy", "detection_accuracy"), ("AP@0.5", "ap50")) + tuple(
    (f"Sens@{m[len('froc_'):]}", m) for m in intervals.FROC_METRICS) + (
    ("FROC mean 0.5-4", "froc_mean_0.5_to_4"), ("FROC mean 0.5-16", "froc_mean_0.5_to_16"))


def difference_table(comparison: Mapping) -> str:
    """Each model minus the reference, paired on the same images, with p and a verdict."""
    reference = comparison["reference"]
    rows = []
    for name, differences in zip(comparison["names"][1:], comparison["differences"]):
        metrics = list(_DIFFERENCE_ROWS) + [
            (f"Table 1: {k[len('category/'):]}", k) for k in differences
            if k.startswith("category/")]
        for label, key in metrics:
            d = differences.get(key)
            if not d or d.get("value") is None:
                continue
            rows.append([f"{name} - {reference}", label, difference_cell(d),
                         "-" if d.get("p_value") is None else f"{d['p_value']:.3f}",
                         intervals.verdict_words(d, f"{name} better", f"{reference} better")])
    return _table(["Comparison", "Metric", "Difference (points) [95% CI]", "p", "Verdict"],
                  rows)


def category_table(runs: Sequence[Run]) -> str:
    """Table 1: categories as columns; their size, then each model's accuracy."""
    first = runs[0][1]["per_category"]
    names = [row["name"] for row in first]
    header = ["Cluster"] + [str(r["cluster"]) if r["cluster"] is not None else "Overall"
                            for r in first]
    rows = [["Category"] + names, ["Size"] + [str(r["size"]) for r in first]]
    for model, m in runs:
        by_name = {r["name"]: r for r in m["per_category"]}
        rows.append([f"Accuracy (%): {model}"] + [_category_cell(by_name.get(n)) for n in names])
    return _table(header, rows)


def _category_cell(row: Optional[Mapping]) -> str:
    if row is None or row.get("interval") is None:
        return _percent(None if row is None else row["accuracy"])
    return intervals.as_percent({"value": row["accuracy"], "interval": row["interval"]})


def froc_group_table(runs: Sequence[Run]) -> str:
    """Sensitivity at each FP rate per lesion-size group and per type, one row per model
    and group ("" when no run has groups)."""
    rows, rates = [], None
    for name, m in runs:
        for kind, title in (("size", "long axis"), ("type", "type")):
            for group, result in ((m.get("froc_by_group") or {}).get(kind) or {}).items():
                if result is None:
                    rows.append([name, f"{title} {group}", 0, 0] + ["-"] * len(rates or []))
                    continue
                rates = rates or list(result["sensitivity_at_fp"])
                rows.append([name, f"{title} {group}", result["num_lesions"],
                             result["num_images"]] +
                            [_cell(result, f"froc_{r}", result["sensitivity_at_fp"][r])
                             for r in rates])
    if not rows or rates is None:
        return ""
    rows = [r + ["-"] * (4 + len(rates) - len(r)) for r in rows]
    return _table(["Model", "Group", "Lesions", "Images"] +
                  [f"Sens@{r} (%)" for r in rates], rows)


def iou_table(runs: Sequence[Run]) -> str:
    """Fig. 5a's values."""
    thresholds = list(runs[0][1]["accuracy_by_iou"])
    rows = [[name] + [_percent(m["accuracy_by_iou"].get(t)) for t in thresholds]
            for name, m in runs]
    return _table(["Model"] + [f"IoU > {t}" for t in thresholds], rows)


def _interval_note(m: Mapping) -> str:
    estimates = m.get("intervals")
    if not estimates:
        return "No intervals (`--bootstrap_resamples=0`).\n"
    if all(e.get("interval") is None for e in estimates.values()):
        return (f"No intervals: {m.get('num_patients')} patient(s) are too few to "
                "resample.\n")
    resamples = m["settings"].get("bootstrap_resamples")
    return (f"In brackets: 95% intervals by bootstrap over the {m.get('num_patients')} "
            f"patients ({resamples} resamples; BCa, or percentile for a Table 1 row that some "
            f"resamples lack). One image is {100.0 / m['num_images']:.1f} points of "
            "accuracy.\n")


def unbookmarked_section(runs: Sequence[Run]) -> str:
    lines = []
    for name, m in runs:
        u = m.get("unbookmarked")
        if not u or "num_unbookmarked_lesions" not in u:
            continue
        lines.append(
            f"- {name}: {u['num_unbookmarked_lesions']} unbookmarked lesions on the key slices, "
            f"sensitivity {_percent(u['sensitivity'])}% at score >= {u['score_threshold']:g}; "
            f"{u['false_positives_on_unbookmarked']} of {u['num_false_positives']} false "
            f"positives are real lesions; {u['top1_wrong_on_unbookmarked']} of "
            f"{u['top1_wrong']} wrong top-1 boxes are; accuracy counting them "
            f"{_percent(u['detection_accuracy_with_unbookmarked'])}%.")
    if not lines:
        return ""
    return "## Unbookmarked lesions (synthetic truth)\n\n" + "\n".join(lines) + "\n"


def render(runs: Sequence[Run], figures: Mapping[str, str],
           qualitative: Sequence[str] = (), comparison: Optional[Mapping] = None) -> str:
    """The markdown of `report.md`.

    Args:
      runs: `(name, metrics)` per model, in column order.
      figures: `{"accuracy_by_iou": path, "precision_recall": path}`, relative
        to the report.
      qualitative: detection images, relative to the report.
      comparison: `runner.write_comparison`'s paired differences, if any.
    """
    m = runs[0][1]
    settings = m["settings"]
    parts = [
        "# Lesion detection evaluation\n",
        f"Split `{settings['dataset']}` `{settings['split']}`: {m['num_images']} images, "
        f"{m['num_lesions']} bookmarked lesions. Boxes in original pixels: accuracy and AP "
        f"against measurements padded by {settings['box_padding_px']:g} px, FROC against "
        f"{settings['froc_box_padding_px']:g} px; IoU convention "
        f"`{settings['iou_convention']}`.\n",
        "## Detection accuracy (Sec. 3), AP and FROC\n",
        summary_table(runs) + "\n",
        "Accuracy: the top-1 box of each image is correct when its IoU with a bookmarked box "
        "exceeds 0.5 (class ignored). AP@0.5: pycocotools on `groundtruth.json` and "
        "`detections.json`, class-agnostic. FROC: the official DeepLesion rule (noisy lesions "
        "dropped), sensitivity at the given false positives per image.\n",
        _interval_note(m),
    ]
    if comparison and comparison["differences"]:
        parts += ["## Paired differences on the same images\n",
                  difference_table(comparison) + "\n",
                  f"Difference of each model minus `{comparison['reference']}` on the same "
                  f"images, in percentage points: 95% interval by paired bootstrap over "
                  f"patients ({comparison['resamples']} resamples), p two-sided by a "
                  "permutation test that swaps the two models' detections patient by patient. "
                  "Where the interval holds 0, or p >= 0.05, the verdict is \"undecided at this "
                  "size\".\n"]
    parts += [
        "## Per category (Table 1)\n",
        f"Categories: `{settings['categories']}`.\n",
        category_table(runs) + "\n",
        "## Accuracy over IoU (Fig. 5a)\n",
        iou_table(runs) + "\n",
    ]
    if "accuracy_by_iou" in figures:
        parts.append(f"![Accuracy over IoU]({figures['accuracy_by_iou']})\n")
    if "precision_recall" in figures:
        parts += ["## Precision-recall at IoU 0.5 (Fig. 5b)\n",
                  f"![Precision-recall]({figures['precision_recall']})\n"]
    if "froc" in figures:
        parts += ["## FROC\n", f"![FROC]({figures['froc']})\n"]
    if "precision_recall_by_category" in figures:
        parts += ["## Precision-recall per category (Fig. 5b)\n",
                  f"![Precision-recall per category]({figures['precision_recall_by_category']})"
                  "\n"]
    groups = froc_group_table(runs)
    if groups:
        parts += ["## FROC by lesion size and type\n", groups + "\n",
                  "Long axis in mm (3DCE's and MULAN's groups: < 10, 10-30, > 30); type: the "
                  f"rows of `{settings['categories']}`. Each group's lesions are the ground "
                  "truth and every detection is scored against them with the official rule "
                  "(images without a lesion of the group drop out; on the others, a detection "
                  "of another group's lesion is a false positive), as the 3DCE author "
                  "describes (CADLab issue #31). Intervals as above, per group.\n"]
    section = unbookmarked_section(runs)
    if section:
        parts.append(section)
    if qualitative:
        parts += ["## Detections (Figs. 1 and 4)\n",
                  "Bookmarks dashed yellow; detections coloured by class.\n",
                  " ".join(f"![]({path})" for path in qualitative) + "\n"]
    return "\n".join(parts)
