"""What the categorizer writes: pseudo labels, a report, cluster montages, a metrics plot.

`output_dir/`:
  pseudo_labels.csv   `lesion_id,cluster` (clusters numbered from 1; 0 is the
                      detector's background class)
  report.json         settings, k-selection scores, per-iteration purity, NMI,
                      accuracies and cluster sizes, convergence; how sure the
                      last choice of k was (`k_choice`) and `warnings`
  k_selection.png     the criterion per k at every iteration (with its
                      standard error for the members' agreement)
  montage_cluster_<c>.png   a grid of the cluster's patches, for a radiologist to
                      name the cluster (the paper's 800-patch review)
  metrics.png         purity, NMI and test accuracy over the iterations
  cluster_names.csv   `cluster,name` when a names file was given
  trunk/              the final fine-tuned network (an ensemble's first member)
                      by layer name, for the detector to start from
                      (`nets.trunk_file`; `bin/train_detector --weights=.../trunk`)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # Files only; no display on servers.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deeplesion_tf.categorize import confidence  # noqa: E402
from deeplesion_tf.categorize import loop  # noqa: E402
from deeplesion_tf.categorize import member_agreement  # noqa: E402
from deeplesion_tf.data import hu_windows  # noqa: E402
from deeplesion_tf.nets import trunk_file  # noqa: E402

TRUNK_DIR = "trunk"


def write_trunk(output_dir: str, model, result: loop.CategorizerResult,
                settings: loop.LoopSettings, *, patch_size: int, padding_px: float,
                width_multiplier: float, norm: str, fc_units: int,
                provenance: Optional[dict] = None) -> str:
    """`output_dir/trunk`: `model` (fine-tuned by the loop) for the detector; returns the dir.

    The spec records the trunk settings the detector checks (width,
    normalisation), what the network's input channels held, and how it was
    trained (iterations, k, lesions, seed, and `provenance`: dataset, splits).
    """
    windows = ", ".join(f"[{low:g}, {high:g}]" for low, high in hu_windows.CATEGORIZER_WINDOWS)
    directory = os.path.join(output_dir, TRUNK_DIR)
    trunk_file.save(model, directory, trunk_file.TrunkSpec(
        width_multiplier=width_multiplier, norm=norm, fc_units=fc_units,
        input_description=f"the key slice under the HU windows {windows}, {patch_size} px "
                          f"patches of each lesion padded by {padding_px:g} px",
        source="categorizer",
        provenance={**(provenance or {}), "seed": settings.seed,
                    "iterations": len(result.iterations),
                    "k": int(result.iterations[-1].k) if result.iterations else None,
                    "converged": bool(result.converged), "lesions": len(result.lesion_ids)}))
    return directory


def write_report(path: str, result: loop.CategorizerResult, settings: loop.LoopSettings,
                 extra: Optional[dict] = None) -> dict:
    """report.json; returns what it wrote."""
    # The last iteration that chose k (with the agreement criterion, the first).
    chose = [r for r in result.iterations if r.k_scores.get(settings.k_criterion)]
    choice = (confidence.k_choice(chose[-1].k_scores, settings.k_criterion, chose[-1].k,
                                  settings.k_values)
              if chose and len(settings.k_values) > 1 else None)
    if choice is not None:
        choice["iteration"] = chose[-1].iteration
    report = {
        "settings": dataclasses.asdict(settings),
        "converged": result.converged,
        "num_lesions": len(result.lesion_ids),
        "final_k": int(result.labels.max()) + 1 if len(result.labels) else 0,
        "iterations": [
            {**r._asdict(),
             "k_scores": {criterion: {str(k): float(v) for k, v in scores.items()}
                          for criterion, scores in r.k_scores.items()}}
            for r in result.iterations],
        "k_choice": choice,
        "warnings": confidence.warnings(choice, result.converged, len(result.iterations),
                                        settings.max_iterations),
    }
    report.update(extra or {})
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
    return report


def _display(patch: np.ndarray) -> np.ndarray:
    """A VGG-preprocessed patch (BGR, mean-subtracted) back to RGB in [0, 1]."""
    rgb = (patch + np.array([103.939, 116.779, 123.68]))[..., ::-1]
    return np.clip(rgb / 255.0, 0.0, 1.0)


def write_montages(output_dir: str, patches: Sequence[np.ndarray], labels: np.ndarray,
                   names: Dict[int, str], per_cluster: int = 64, seed: int = 0) -> List[str]:
    """One PNG grid per cluster of up to `per_cluster` random patches; returns the paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for cluster in range(int(labels.max()) + 1 if len(labels) else 0):
        members = np.flatnonzero(labels == cluster)
        chosen = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        columns = int(np.ceil(np.sqrt(len(chosen)))) or 1
        rows = int(np.ceil(len(chosen) / columns)) or 1
        figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.2, rows * 1.2 + 0.4),
                                    squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for axis, index in zip(axes.flat, chosen):
            axis.imshow(_display(patches[index]))
        title = f"cluster {cluster + 1}" + (f" ({names[cluster + 1]})" if cluster + 1 in names
                                             else "")
        figure.suptitle(f"{title}: {len(members)} lesions, {len(chosen)} shown")
        path = os.path.join(output_dir, f"montage_cluster_{cluster + 1}.png")
        figure.savefig(path, dpi=80)
        plt.close(figure)
        paths.append(path)
    return paths


def plot_metrics(path: str, result: loop.CategorizerResult) -> None:
    """Purity and NMI against the previous iteration, and test accuracy, per iteration."""
    iterations = [r.iteration for r in result.iterations]
    figure, axis = plt.subplots(figsize=(6, 4))
    for name in ("purity", "nmi", "test_accuracy"):
        values = [getattr(r, name) for r in result.iterations]
        points = [(i, v) for i, v in zip(iterations, values) if v is not None]
        if points:
            axis.plot(*zip(*points), marker="o", label=name.replace("_", " "))
    axis.set_xlabel("iteration")
    axis.set_ylim(0, 1.02)
    axis.set_xticks(iterations)
    axis.legend()
    axis.set_title("Categorizer convergence" + (" (converged)" if result.converged else ""))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_k_selection(path: str, result: loop.CategorizerResult, criterion: str) -> bool:
    """The criterion against k, one line per iteration, the chosen k marked.

    Returns False (and writes nothing) when no iteration scored several k.
    """
    scored = [r for r in result.iterations if len(r.k_scores.get(criterion, {})) > 1]
    if not scored:
        return False
    errors_key = member_agreement.AGREEMENT + "_standard_error"
    figure, axis = plt.subplots(figsize=(6, 4))
    for r in scored:
        ks = sorted(int(k) for k in r.k_scores[criterion])
        values = [r.k_scores[criterion][k] for k in ks]
        errors = r.k_scores.get(errors_key)
        if errors and criterion == member_agreement.AGREEMENT:
            # 95% intervals of each k's mean agreement over the member pairs.
            axis.errorbar(ks, values, yerr=[1.96 * errors[k] for k in ks], marker="o",
                          capsize=3, label=f"iteration {r.iteration}")
        else:
            axis.plot(ks, values, marker="o", label=f"iteration {r.iteration}")
        axis.plot([r.k], [r.k_scores[criterion][r.k]], marker="*", markersize=14,
                  color="black", linestyle="none")
    axis.set_xlabel("k (clusters)")
    axis.set_ylabel(criterion.replace("_", " "))
    axis.set_title("Choice of k (star: chosen)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True
