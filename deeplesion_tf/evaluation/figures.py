"""The paper's figures: accuracy over IoU (Fig. 5a), precision-recall (Fig. 5b), detections (Figs. 1, 4).

Drawn with matplotlib's object API on the Agg canvas (PNG files; no
display, no global backend switch). Boxes are `[ymin, xmin, ymax, xmax]`
original pixels with pixel centres at integers, so a box is drawn from
`xmin - 0.5` to `xmax + 0.5`, covering its pixels.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# Fig. 4's colours by short class name; other names take the tab10 colours in order.
CLASS_COLOURS = {"LV": "red", "LN": "orange", "AB": "green", "CL": "magenta", "MX": "blue"}
_OTHER_COLOURS = ("tab:cyan", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:gray")
BOOKMARK_COLOUR = "yellow"


def class_colour(names: Sequence[str], k: int) -> str:
    """Colour of class `k` (1-based) of a detector with class `names`."""
    name = names[k - 1] if 1 <= k <= len(names) else ""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    return _OTHER_COLOURS[(k - 1) % len(_OTHER_COLOURS)]


def _save(figure: Figure, path: str) -> None:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")


Band = Tuple[Sequence[float], Sequence[float]]  # low, high at each point of a curve


def _band(axes, x, band: Optional[Band], line) -> None:
    """The 95% interval around a curve, shaded in its colour."""
    if band is None:
        return
    low, high = (np.asarray(v, np.float64) * 100.0 for v in band)
    axes.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)


def plot_accuracy_by_iou(curves: Mapping[str, Mapping[str, float]], path: str,
                         bands: Optional[Mapping[str, Band]] = None) -> None:
    """Fig. 5a: `{model: {"0.1": accuracy, ...}}` -> a PNG, with `{model: band}` shaded."""
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    for name, curve in curves.items():
        thresholds = [float(t) for t in curve]
        (line,) = axes.plot(thresholds, [100.0 * v for v in curve.values()], marker="o",
                            label=name)
        _band(axes, thresholds, (bands or {}).get(name), line)
    axes.set(xlabel="IoU threshold", ylabel="Detection accuracy (%)", ylim=(0, 100),
             title="Top-1 detection accuracy over IoU" + (" (95% intervals)" if bands else ""))
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_froc(curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]], path: str,
              points: Optional[Mapping[str, Tuple[Sequence[float], Sequence[float], Band]]] = None
              ) -> None:
    """The FROC: `{model: (FPs per image [P], sensitivity [P])}` -> a PNG (log FP axis).

    `points`: `{model: (rates, sensitivities, (low, high))}`, drawn as the
    sensitivities at the rates with their 95% intervals as error bars.
    """
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    for name, (fps, sensitivity) in curves.items():
        fps, sensitivity = np.asarray(fps, np.float64), np.asarray(sensitivity, np.float64)
        shown = fps > 0  # the log axis starts after the first false positive
        (line,) = axes.step(fps[shown], 100.0 * sensitivity[shown], where="post", label=name)
        if points and name in points:
            rates, values, (low, high) = points[name]
            values = 100.0 * np.asarray(values, np.float64)
            error = np.stack([values - 100.0 * np.asarray(low, np.float64),
                              100.0 * np.asarray(high, np.float64) - values])
            axes.errorbar(rates, values, yerr=error, fmt="o", color=line.get_color(), capsize=3)
            axes.fill_between(rates, 100.0 * np.asarray(low, np.float64),
                              100.0 * np.asarray(high, np.float64), color=line.get_color(),
                              alpha=0.15, linewidth=0)
    axes.set_xscale("log")
    axes.set(xlabel="False positives per image", ylabel="Sensitivity (%)", ylim=(0, 100),
             xlim=(0.1, 32), title="FROC (official rule)" + (" with 95% intervals"
                                                             if points else ""))
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_precision_recall(curves: Mapping[str, Tuple[Sequence[float], Sequence[float]]],
                          path: str) -> None:
    """Fig. 5b: `{model: (recall [R], precision [R])}` at IoU 0.5 -> a PNG.

    Points with precision -1 (pycocotools: recall not reached) are left out.
    """
    figure = Figure(figsize=(5, 4))
    axes = figure.add_subplot()
    for name, (recall, precision) in curves.items():
        recall, precision = np.asarray(recall), np.asarray(precision)
        reached = precision > -1
        axes.plot(recall[reached], precision[reached], label=name)
    axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02),
             title="Precision-recall at IoU 0.5")
    axes.grid(True, alpha=0.3)
    axes.legend()
    _save(figure, path)


def plot_precision_recall_by_category(
        curves: Mapping[str, Mapping[str, Mapping[str, Sequence[float]]]], path: str) -> None:
    """Fig. 5b per category: `{model: {category: {"recall", "precision"}}}` -> a PNG, one
    panel per category with every model's curve (`froc_groups.group_froc`'s curves)."""
    names = sorted({c for by in curves.values() for c in by})
    columns = min(len(names), 3)
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.6 * columns, 3.2 * rows), layout="constrained")
    for k, category in enumerate(names):
        axes = figure.add_subplot(rows, columns, k + 1)
        for model, by in curves.items():
            if category in by:
                axes.plot(by[category]["recall"], by[category]["precision"], label=model)
        axes.set(xlabel="Recall", ylabel="Precision", xlim=(0, 1), ylim=(0, 1.02),
                 title=category)
        axes.grid(True, alpha=0.3)
        if k == 0:
            axes.legend()
    figure.suptitle("Precision-recall per category (Fig. 5b), IoU 0.5")
    _save(figure, path)


def _rectangle(box, **kwargs) -> Rectangle:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return Rectangle((xmin - 0.5, ymin - 0.5), xmax - xmin + 1.0, ymax - ymin + 1.0,
                     fill=False, **kwargs)


def draw_detections(windowed: np.ndarray, bookmarks: np.ndarray, boxes: np.ndarray,
                    scores: np.ndarray, classes: np.ndarray, class_names: Sequence[str],
                    path: str, *, score_threshold: float = 0.5, max_boxes: int = 5,
                    title: Optional[str] = None) -> int:
    """A windowed key slice with its bookmarks (dashed yellow) and detections (Fig. 4).

    Args:
      windowed: `[H, W]` in [0, 1].
      bookmarks: `[n, 4]` bookmarked lesion boxes.
      boxes, scores, classes: `[D, 4]`, `[D]`, `[D]` detections.
      class_names: K short names; a detection is labelled `name score`.
      path: the PNG.
      score_threshold, max_boxes: the detections drawn: the `max_boxes`
        best scoring at least `score_threshold`.

    Returns:
      The number of detections drawn.
    """
    height, width = windowed.shape
    figure = Figure(figsize=(5 * width / max(height, width) + 0.2, 5 * height / max(height, width)))
    axes = figure.add_axes([0, 0, 1, 1])
    axes.imshow(windowed, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_axis_off()
    for box in bookmarks:
        axes.add_patch(_rectangle(box, edgecolor=BOOKMARK_COLOUR, linestyle="--", linewidth=1.5))
    order = np.argsort(-np.asarray(scores), kind="stable")
    drawn = [k for k in order if scores[k] >= score_threshold][:max_boxes]
    for k in drawn:
        colour = class_colour(class_names, int(classes[k]))
        axes.add_patch(_rectangle(boxes[k], edgecolor=colour, linewidth=1.2))
        name = class_names[classes[k] - 1] if 1 <= classes[k] <= len(class_names) else "?"
        axes.text(float(boxes[k][1]) - 0.5, float(boxes[k][0]) - 1.0, f"{name} {scores[k]:.2f}",
                  color=colour, fontsize=7, va="bottom")
    if title:
        axes.text(1, 1, title, color="white", fontsize=7, va="top")
    _save(figure, path)
    return len(drawn)
