"""`report.md`: the paper's tables and figures for one model, or several side by side.

With two models (single-class and multi-class, evaluated on the same split
and categories) the per-category table is the paper's Table 1.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

Run = Tuple[str, Mapping]  # (model name, metrics.json)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{100.0 * value:.2f}"


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
        rows.append([name, m["num_images"], _percent(m["detection_accuracy"]),
                     _percent(m["ap50"])] +
                    [_percent(froc["sensitivity_at_fp"].get(r)) for r in rates] +
                    [_percent(froc["mean_0.5_to_4"]),
                     "-" if latency is None else f"{latency:.1f}"])
    return _table(header, rows)


def category_table(runs: Sequence[Run]) -> str:
    """Table 1: categories as columns; their size, then each model's accuracy."""
    first = runs[0][1]["per_category"]
    names = [row["name"] for row in first]
    header = ["Cluster"] + [str(r["cluster"]) if r["cluster"] is not None else "Overall"
                            for r in first]
    rows = [["Category"] + names, ["Size"] + [str(r["size"]) for r in first]]
    for model, m in runs:
        accuracy = {r["name"]: r["accuracy"] for r in m["per_category"]}
        rows.append([f"Accuracy (%): {model}"] + [_percent(accuracy.get(n)) for n in names])
    return _table(header, rows)


def iou_table(runs: Sequence[Run]) -> str:
    """Fig. 5a's values."""
    thresholds = list(runs[0][1]["accuracy_by_iou"])
    rows = [[name] + [_percent(m["accuracy_by_iou"].get(t)) for t in thresholds]
            for name, m in runs]
    return _table(["Model"] + [f"IoU > {t}" for t in thresholds], rows)


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
           qualitative: Sequence[str] = ()) -> str:
    """The markdown of `report.md`.

    Args:
      runs: `(name, metrics)` per model, in column order.
      figures: `{"accuracy_by_iou": path, "precision_recall": path}`, relative
        to the report.
      qualitative: detection images, relative to the report.
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
    section = unbookmarked_section(runs)
    if section:
        parts.append(section)
    if qualitative:
        parts += ["## Detections (Figs. 1 and 4)\n",
                  "Bookmarks dashed yellow; detections coloured by class.\n",
                  " ".join(f"![]({path})" for path in qualitative) + "\n"]
    return "\n".join(parts)
