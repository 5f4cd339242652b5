"""How sure the categorizer's choice of k was, and when a user should look harder.

On real data there is no truth to score against; what a run can say about
itself is how clearly its criterion preferred the chosen k, whether that k sits
at the edge of the range tried (the best k may lie outside it), and whether the
loop converged. `report.json` carries these as `k_choice` and `warnings`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from deeplesion_tf.categorize import kmeans
from deeplesion_tf.categorize import member_agreement

# Whether a larger score is better: the criteria of kmeans, and the members' agreement.
_HIGHER_IS_BETTER = {**kmeans.HIGHER_IS_BETTER, member_agreement.AGREEMENT: True}
# A gap to the runner-up of fewer standard errors than this is reported as a weak
# choice (about a 95% two-sided level).
WEAK_GAP_STANDARD_ERRORS = 2.0


def k_choice(k_scores: Dict[str, Dict[int, float]], criterion: str, k: int,
             k_values: Sequence[int]) -> dict:
    """The chosen k, its runner-up and the gap between them under `criterion`.

    Args:
      k_scores: `{criterion: {k: score}}` of one iteration (keys may be strings,
        as read back from JSON); the agreement criterion also has
        `agreement_standard_error`.
      criterion: the criterion that chose k.
      k: the chosen k.
      k_values: the k tried.

    Returns:
      `{"criterion", "k", "runner_up", "gap", "gap_in_standard_errors", "at_edge"}`:
      the gap is the runner-up's disadvantage in the criterion's own units (always
      >= 0); in standard errors only for the agreement criterion; `at_edge` when
      k is the smallest or largest k tried.
    """
    tried = sorted(int(v) for v in k_values)
    choice = {"criterion": criterion, "k": int(k), "runner_up": None, "gap": None,
              "gap_in_standard_errors": None,
              "at_edge": len(tried) > 1 and int(k) in (tried[0], tried[-1])}
    scores = {int(c): float(v) for c, v in k_scores.get(criterion, {}).items()}
    if len(scores) < 2 or int(k) not in scores:
        return choice
    sign = 1.0 if _HIGHER_IS_BETTER.get(criterion, False) else -1.0
    others = {c: v for c, v in scores.items() if c != int(k) and v == v}  # v == v: not NaN
    if not others:
        return choice
    runner_up = max(others, key=lambda c: (sign * others[c], -c))
    choice["runner_up"] = runner_up
    choice["gap"] = sign * (scores[int(k)] - scores[runner_up])
    errors = k_scores.get(member_agreement.AGREEMENT + "_standard_error")
    if criterion == member_agreement.AGREEMENT and errors:
        errors = {int(c): float(v) for c, v in errors.items()}
        se = (errors[int(k)] ** 2 + errors[runner_up] ** 2) ** 0.5
        choice["gap_in_standard_errors"] = choice["gap"] / se if se > 0 else None
    return choice


def warnings(choice: Optional[dict], converged: bool, iterations: int,
             max_iterations: int) -> List[str]:
    """Plain-language warnings for `report.json` and the log."""
    found = []
    if choice and choice["at_edge"]:
        found.append(f"k = {choice['k']} is at the edge of the k tried: the best number of "
                     "clusters may lie outside the range; widen --k")
    if choice and choice["gap_in_standard_errors"] is not None and (
            choice["gap_in_standard_errors"] < WEAK_GAP_STANDARD_ERRORS):
        found.append(f"k = {choice['k']} was preferred to k = {choice['runner_up']} by only "
                     f"{choice['gap_in_standard_errors']:.1f} standard errors of the "
                     f"{choice['criterion']}: look at both clusterings' montages")
    if not converged:
        found.append(f"the loop did not converge in {iterations} of {max_iterations} "
                     "iterations: the clusters still changed; look at the montages, or raise "
                     "--max_iterations")
    return found
