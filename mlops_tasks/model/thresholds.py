"""A classifier's decision threshold, chosen by the spec's rule on a validation split.

A probability of 0.5 is the right cut only when both errors cost the same and the classes are
balanced; at a 23 % base rate a model can answer "no" to every request. The spec says how to
cut (`evaluation.threshold`):

    objective: f1                  the threshold with the best F1
    precision_at_recall: 0.8       the best precision among thresholds with recall >= 0.8
    cost: {fp: 1, fn: 5}           the least total cost of false positives and negatives
    fixed: 0.3                     this threshold

The rule is applied on a validation split carved from the training part (its newest rows by
time, else a stable row hash salted apart from the holdout's), never on the gate's holdout: the gate
then measures the chosen threshold on rows that did not choose it. A row is predicted positive
when its probability is >= the threshold. Ties go to the highest threshold (the fewest
positives), so the choice is a function of the validation rows alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_tasks.records import Threshold

if TYPE_CHECKING:
    import numpy as np

    from mlops_tasks.specs import ThresholdSpec


def rule_text(rule: ThresholdSpec) -> str:
    """The rule as the model card and the lineage say it."""
    if rule.fixed is not None:
        return f"fixed {rule.fixed:g}"
    if rule.objective is not None:
        return f"best {rule.objective}"
    if rule.precision_at_recall is not None:
        return f"best precision at recall >= {rule.precision_at_recall:g}"
    assert rule.cost is not None
    return f"least cost (fp {rule.cost.fp:g}, fn {rule.cost.fn:g})"


def choose(rule: ThresholdSpec, y: np.ndarray, proba: np.ndarray) -> Threshold:
    """The threshold `rule` picks on validation labels `y` (0/1) and probabilities `proba`."""
    import numpy as np

    y = np.asarray(y, dtype=int)
    proba = np.asarray(proba, dtype=float)
    n, positives = len(y), int(y.sum())
    if rule.fixed is not None:
        value = float(rule.fixed)
    else:
        # every distinct probability is a candidate cut, plus one above them all (no positive)
        order = np.argsort(-proba, kind="mergesort")
        p, ys = proba[order], y[order]
        tp, fp = np.cumsum(ys), np.cumsum(1 - ys)
        last = np.r_[np.flatnonzero(np.diff(p) != 0), n - 1] if n else np.array([], int)
        cuts = np.r_[np.nextafter(p[0], np.inf) if n else 1.0, p[last]]
        tp = np.r_[0, tp[last]].astype(float)
        fp = np.r_[0, fp[last]].astype(float)
        fn = positives - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
            recall = np.where(positives > 0, tp / max(positives, 1), 0.0)
            f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        if rule.objective == "f1":
            score = f1
        elif rule.objective == "balanced_accuracy":
            negatives = n - positives
            tnr = np.where(negatives > 0, (negatives - fp) / max(negatives, 1), 0.0)
            score = (recall + tnr) / 2
        elif rule.precision_at_recall is not None:
            score = np.where(recall >= rule.precision_at_recall - 1e-12, precision, -1.0)
        else:
            assert rule.cost is not None
            score = -(rule.cost.fp * fp + rule.cost.fn * fn)
        best = int(np.argmax(score))  # cuts run from the highest: the first best is the highest
        value = float(min(max(cuts[best], 0.0), 1.0))
    pred = proba >= value
    tp_, fp_ = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    fn_ = positives - tp_
    return Threshold(
        value=value,
        rule=rule_text(rule),
        validation_rows=n,
        precision=tp_ / (tp_ + fp_) if tp_ + fp_ else None,
        recall=tp_ / positives if positives else None,
        f1=2 * tp_ / (2 * tp_ + fp_ + fn_) if (2 * tp_ + fp_ + fn_) else None,
    )
