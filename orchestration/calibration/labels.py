"""Every decided review is a label for the answer it judged: approved as it is = right; edited, rejected, or
approved with another candidate chosen = wrong. Expired items are not labels: nobody judged them."""
from __future__ import annotations

from orchestration.engine.confidence import MEASURED
from orchestration.models import ConfidenceLabel, ReviewItem

Status = ReviewItem.Status


def label_review(item: ReviewItem) -> ConfidenceLabel | None:
    """Record the label a decided item gives its reviewed answer (the last candidate: the one the gate held
    back); none when that answer's confidence was not measured (the prior is never calibrated)."""
    if item.status not in (Status.APPROVED, Status.EDITED, Status.REJECTED) or not item.candidates:
        return None
    last = len(item.candidates) - 1
    reviewed = item.candidates[last]
    method, raw = reviewed.get("confidence_method"), reviewed.get("confidence_raw")
    if method not in MEASURED or not isinstance(raw, (int, float)):
        return None
    correct = item.status == Status.APPROVED and (item.chosen_index is None or item.chosen_index == last)
    label, _ = ConfidenceLabel.objects.get_or_create(
        review=item, defaults={"model_alias": reviewed.get("model", ""), "method": method, "raw": float(raw),
                               "scope": reviewed.get("confidence_scope") or "", "correct": correct,
                               "source": ConfidenceLabel.Source.REVIEW})
    return label
