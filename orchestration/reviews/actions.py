"""The human review queue's writes: open, claim, decide (approve / edit / reject), expire, lapse claims.

Every write with side effects goes through a function here. Claims and decisions are
conditional UPDATEs whose WHERE clause says who may still act on the item: exactly one row
changed means this caller won; none means someone else holds or already decided it, and
`ReviewConflict` names them. That holds on SQLite and PostgreSQL alike, without locks held
across requests. Live events and the run's resume are sent only after the transaction commits.

Decisions go back to the engine through `selectors.decisions_for_run(run_id)`, keyed by the gate's step key.
"""
from __future__ import annotations

import contextvars
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from orchestration import audit, live
from orchestration.access.apikeys import KeyInfo
from orchestration.access.teams import scope_for_user
from orchestration.calibration.labels import label_review
from orchestration.engine.events import (StepFinished, StepIdentity, now_ms, review_created, review_decided,
                                         review_updated, step_finished, with_team)
from orchestration.errors import ReviewConflict, ReviewError, ReviewForbidden, ReviewNotFound
from orchestration.models import ReviewItem, Run, Step, TeamMembership
from orchestration.models.runs import StepStatus
from orchestration.reviews.selectors import (ACTION_BY_STATUS, DECIDE_PERMISSION, DECIDED_STATUSES, OPEN_STATUSES,
                                             Status, _decided_action, _float, _ms, best_candidate_index, decider_label,
                                             released, review_summary)
from orchestration.runs.actions import resume_run

logger = logging.getLogger(__name__)

DECIDE_SCOPE = "reviews:decide"
REVIEWERS_GROUP = "reviewers"


@dataclass(frozen=True)
class Reviewer:
    """Who acts on an item: a person, an API key, or the system (expiry, claim lapse)."""

    user: object | None = None
    key: KeyInfo | None = None

    @property
    def label(self) -> str:
        if self.user is not None:
            return f"user:{self.user.get_username()}"
        if self.key is not None:
            return f"key:{self.key.prefix}"
        return "system"

    @property
    def may_decide(self) -> bool:
        """May decide somewhere: the reviewers group (items with no team), or a reviewer role in some team."""
        if self.user is not None:
            return self.user.is_active and (self.user.has_perm(DECIDE_PERMISSION) or any(
                self._scope.has_role(team_id, TeamMembership.Role.REVIEWER) for team_id in self._scope.roles)
                or self._scope.everything)
        if self.key is not None:
            return self.key.allows(DECIDE_SCOPE)
        return True

    @cached_property
    def _scope(self):
        return scope_for_user(self.user)

    def sees(self, team_id: int | None) -> bool:
        """Whether an item of a run of this team exists for this reviewer (else it is "not found").

        A team's key sees its team; a key with no team (an operator's) sees all. A person sees their teams
        (superusers all); items with no team are the operator space: staff and the reviewers group see them."""
        if self.key is not None:
            return self.key.team is None or self.key.team_id == team_id
        if self.user is None:
            return True
        if team_id is None:
            return self._scope.everything or self.user.is_staff or self.user.has_perm(DECIDE_PERMISSION)
        return self._scope.sees(team_id)

    def may_decide_in(self, team_id: int | None) -> bool:
        """Decide an item of this team: the reviewer role or above in it (superusers always); items with no
        team, the reviewers group as before teams; keys, the `reviews:decide` scope."""
        if self.user is not None:
            if team_id is None:  # a reviewer role in some team gives nothing here
                return self.user.is_active and (self.user.has_perm(DECIDE_PERMISSION) or self._scope.everything)
            return self.user.is_active and self._scope.has_role(team_id, TeamMembership.Role.REVIEWER)
        return self.may_decide


SYSTEM = Reviewer()


# --- opening --------------------------------------------------------------------------------------------------

def open_review(*, run_id, step_key: str, node_id: str = "", reason: str = ReviewItem.Reason.LOW_CONFIDENCE,
                request: dict | None = None, candidates: list[dict] | None = None, due_in_s: float | None = None,
                default_action: str = ReviewItem.DefaultAction.APPROVE, category: str = "") -> ReviewItem:
    """Open a review item for one gate of one run, or return the one already open for it (idempotent).

    `due_in_s` None means PODIUM_REVIEW_DUE_S; at due time the scheduler applies `default_action`.
    """
    if reason not in ReviewItem.Reason.values:
        raise ValueError(f"unknown review reason {reason!r}; use one of {', '.join(ReviewItem.Reason.values)}")
    if default_action not in ReviewItem.DefaultAction.values:
        raise ValueError(f"unknown default action {default_action!r}; "
                         f"use one of {', '.join(ReviewItem.DefaultAction.values)}")
    request = dict(request or {})
    category = category or str(request.get("category") or (request.get("metadata") or {}).get("category") or "")
    due_s = settings.PODIUM_REVIEW_DUE_S if due_in_s is None else due_in_s
    with transaction.atomic():
        existing = ReviewItem.objects.filter(run_id=run_id, step_key=step_key, status__in=OPEN_STATUSES).first()
        if existing is not None:
            return existing
        item = ReviewItem.objects.create(
            run_id=run_id, step_key=step_key, node_id=node_id, reason=reason, request=request,
            candidates=[_clean_candidate(c) for c in candidates or []], category=category[:64],
            default_action=default_action, due_at=timezone.now() + timedelta(seconds=due_s),
            step_id=Step.objects.filter(run_id=run_id, key=step_key).values_list("id", flat=True).first(),
        )
        audit.record(actor=SYSTEM.label, action="review.opened", subject=f"review:{item.id}",
                     data=_with_team({"run_id": str(run_id), "step_key": step_key, "reason": reason,
                                      "models": [c["model"] for c in item.candidates],
                                      "default_action": default_action},
                                     Run.objects.filter(pk=run_id).values_list("team_id", flat=True).first()))
        _publish_on_commit(review_created, item.pk)
    return item


MEASUREMENT_FIELDS = ("confidence_method", "confidence_raw", "calibrated", "confidence_low", "calibration_labels",
                      "confidence_scope", "how_sure")  # engine/nodes/gate.py measurement_fields


def _clean_candidate(candidate: dict) -> dict:
    return {"model": str(candidate.get("model", "")), "output": str(candidate.get("output", "")),
            "confidence": _float(candidate.get("confidence")), "cost_usd": _float(candidate.get("cost_usd")),
            **{name: candidate[name] for name in MEASUREMENT_FIELDS if name in candidate}}


# --- claiming -------------------------------------------------------------------------------------------------

def claim_review(*, item_id, reviewer: Reviewer) -> ReviewItem:
    """Take an item so nobody else decides it; a lapsed claim (PODIUM_REVIEW_CLAIM_TTL_S) can be taken over."""
    _require_decider(reviewer)
    if reviewer.user is None:
        raise ReviewForbidden("Claims are held by people; an API key decides directly.")
    _require_access(item_id, reviewer)
    now = timezone.now()
    may_claim = (Q(status=Status.PENDING) | Q(status=Status.CLAIMED, assignee=reviewer.user)
                 | Q(status=Status.CLAIMED, claimed_at__lt=_claim_cutoff(now)))
    with transaction.atomic():
        changed = ReviewItem.objects.filter(pk=_pk(item_id)).filter(may_claim).update(
            status=Status.CLAIMED, assignee=reviewer.user, claimed_at=now)
        item = _load(item_id)
        if not changed:
            raise _conflict(item, reviewer)
        audit.record(actor=reviewer.label, action="review.claimed", subject=f"review:{item.id}",
                     data=_with_team({"run_id": str(item.run_id)}, item.run.team_id))
        _publish_on_commit(review_updated, item.pk, change="claimed")
    return item


def release_claim(*, item_id, reviewer: Reviewer) -> ReviewItem:
    """Give a claimed item back to the queue."""
    _require_decider(reviewer)
    _require_access(item_id, reviewer)
    with transaction.atomic():
        changed = ReviewItem.objects.filter(pk=_pk(item_id), status=Status.CLAIMED, assignee=reviewer.user).update(
            status=Status.PENDING, assignee=None, claimed_at=None)
        item = _load(item_id)
        if not changed:
            raise _conflict(item, reviewer)
        audit.record(actor=reviewer.label, action="review.released", subject=f"review:{item.id}",
                     data=_with_team({"run_id": str(item.run_id)}, item.run.team_id))
        _publish_on_commit(review_updated, item.pk, change="released")
    return item


def lapse_stale_claims(now: datetime | None = None) -> int:
    """Return claims older than PODIUM_REVIEW_CLAIM_TTL_S to the queue; the number lapsed."""
    now = now or timezone.now()
    cutoff = _claim_cutoff(now)
    lapsed = 0
    stale = list(ReviewItem.objects.filter(status=Status.CLAIMED, claimed_at__lt=cutoff)
                 .values_list("pk", "assignee__username", "run__team_id")[:500])
    for pk, holder, team in stale:
        with transaction.atomic():
            # Conditional again: the holder may have decided in the meantime.
            if ReviewItem.objects.filter(pk=pk, status=Status.CLAIMED, claimed_at__lt=cutoff).update(
                    status=Status.PENDING, assignee=None, claimed_at=None):
                lapsed += 1
                audit.record(actor=SYSTEM.label, action="review.claim_lapsed", subject=f"review:{pk}",
                             data=_with_team({"holder": holder}, team))
                _publish_on_commit(review_updated, pk, change="claim_lapsed", previous_assignee=holder)
    return lapsed


# --- deciding -------------------------------------------------------------------------------------------------

def approve_review(*, item_id, reviewer: Reviewer, candidate: int | None = None, comment: str = "") -> ReviewItem:
    """Release a candidate's output as it is (the most confident one unless `candidate` names another)."""
    return _decide(item_id, reviewer, Status.APPROVED, candidate=candidate, comment=comment)


def edit_review(*, item_id, reviewer: Reviewer, output: str, candidate: int | None = None,
                comment: str = "") -> ReviewItem:
    """Release the reviewer's text instead of a candidate's; `candidate` is the one it was edited from."""
    if not isinstance(output, str) or not output.strip():
        raise ReviewError("An edit needs the text to release.", field="output")
    return _decide(item_id, reviewer, Status.EDITED, candidate=candidate, comment=comment, edited_output=output)


def reject_review(*, item_id, reviewer: Reviewer, comment: str = "") -> ReviewItem:
    """Release nothing: the gate fails the run or escalates, as its workflow says."""
    return _decide(item_id, reviewer, Status.REJECTED, comment=comment)


def bulk_approve(*, item_ids, reviewer: Reviewer, comment: str = "") -> tuple[list[ReviewItem], list[dict]]:
    """Approve each item's best candidate, one transaction per item: (approved, refusals)."""
    approved, refused = [], []
    for item_id in item_ids:
        try:
            approved.append(approve_review(item_id=item_id, reviewer=reviewer, comment=comment))
        except ReviewForbidden:
            raise
        except ReviewError as exc:
            refused.append({"review_id": str(item_id), "code": exc.code, "detail": exc.message, **exc.details})
    return approved, refused


def _decide(item_id, reviewer: Reviewer, status: str, *, candidate: int | None = None, comment: str = "",
            edited_output: str = "") -> ReviewItem:
    _require_decider(reviewer)
    _require_access(item_id, reviewer)
    now = timezone.now()
    item = _load(item_id)
    chosen = None
    if status != Status.REJECTED:
        chosen = best_candidate_index(item.candidates) if candidate is None else candidate
        if status == Status.APPROVED and chosen is None:
            raise ReviewError("This item has no candidate to approve; edit or reject it.")
        if chosen is not None and not (isinstance(chosen, int) and 0 <= chosen < len(item.candidates)):
            raise ReviewError(f"There is no candidate {chosen}.", field="candidate")
    # Who may still act: nobody holds it, the holder's claim lapsed, or the caller is the holder.
    may_decide = Q(status=Status.PENDING) | Q(status=Status.CLAIMED, claimed_at__lt=_claim_cutoff(now))
    if reviewer.user is not None:
        may_decide |= Q(status=Status.CLAIMED, assignee=reviewer.user)
    fields = {"status": status, "decided_at": now, "chosen_index": chosen, "edited_output": edited_output,
              "comment": comment or "", "decided_by": reviewer.user,
              "decided_by_key_id": reviewer.key.id if reviewer.key else None}
    if reviewer.user is not None:
        fields.update(assignee=reviewer.user, claimed_at=now)
    with transaction.atomic():
        if not ReviewItem.objects.filter(pk=item.pk).filter(may_decide).update(**fields):
            raise _conflict(_load(item.pk), reviewer)
        item = _load(item.pk)
        action = ACTION_BY_STATUS[status]
        output, model = released(item)
        audit.record(actor=reviewer.label, action=f"review.{action}", subject=f"review:{item.id}",
                     data=_with_team({"run_id": str(item.run_id), "step_key": item.step_key, "reason": item.reason,
                                      "candidate": chosen, "model": model, "output": output,
                                      "comment": item.comment}, item.run.team_id))
        step = _record_human_step(item, reviewer, action, output, model, now)
        label_review(item)  # the decision teaches calibration whether the held-back answer was right
        _publish_on_commit(review_decided, item.pk, action=action, output=output, comment=item.comment)
        team = item.run.team_id
        transaction.on_commit(lambda: live.publish(with_team(_step_event(step), team)))
        _resume_on_commit(item.run_id)
    return item


def expire_due_reviews(now: datetime | None = None) -> int:
    """Apply the default action to open items past due_at; the number expired."""
    now = now or timezone.now()
    expired = 0
    due = list(ReviewItem.objects.filter(status__in=OPEN_STATUSES, due_at__lte=now)
               .values_list("pk", flat=True)[:500])
    for pk in due:
        item = ReviewItem.objects.get(pk=pk)
        approve = item.default_action == ReviewItem.DefaultAction.APPROVE
        chosen = best_candidate_index(item.candidates) if approve else None
        with transaction.atomic():
            # Conditional: a reviewer may have decided it a moment ago; then it is not ours to expire.
            if not ReviewItem.objects.filter(pk=pk, status__in=OPEN_STATUSES, due_at__lte=now).update(
                    status=Status.EXPIRED, decided_at=now, chosen_index=chosen, assignee=None, claimed_at=None):
                continue
            expired += 1
            item = _load(pk)
            action, escalate = _decided_action(item)
            output, model = released(item)
            audit.record(actor=SYSTEM.label, action="review.expired", subject=f"review:{pk}",
                         data=_with_team({"run_id": str(item.run_id), "step_key": item.step_key,
                                          "default_action": item.default_action, "applied": action,
                                          "escalate": escalate, "candidate": chosen, "model": model,
                                          "output": output, "due_at": item.due_at.isoformat()}, item.run.team_id))
            _publish_on_commit(review_decided, pk, action=action, output=output, expired=True)
            _resume_on_commit(item.run_id)
    return expired


# --- helpers --------------------------------------------------------------------------------------------------

def _require_decider(reviewer: Reviewer) -> None:
    if not reviewer.may_decide:
        if reviewer.key is not None:
            raise ReviewForbidden(f"This API key lacks the '{DECIDE_SCOPE}' scope.")
        raise ReviewForbidden("Only reviewers (the reviewers group, or the reviewer role in a team) may claim and "
                              "decide review items.")


def _require_access(item_id, reviewer: Reviewer) -> None:
    """Another team's item is not found (as one that does not exist); one the reviewer sees but may not decide
    (a viewer of its team) is forbidden."""
    row = ReviewItem.objects.filter(pk=_pk(item_id)).values("run__team_id").first()
    if row is None or not reviewer.sees(row["run__team_id"]):
        raise ReviewNotFound("No such review item.")
    if not reviewer.may_decide_in(row["run__team_id"]):
        raise ReviewForbidden("Deciding this team's reviews needs the reviewer or admin role in the team.")


def _conflict(item: ReviewItem, reviewer: Reviewer) -> ReviewError:
    if item.status == Status.CLAIMED:
        holder = item.assignee.get_username() if item.assignee_id else "someone"
        return ReviewConflict(f"Claimed by {holder}.", holder=holder, review_status=item.status)
    if item.status in DECIDED_STATUSES:
        holder = decider_label(item) or "someone"
        return ReviewConflict(f"Already {item.status} by {holder}.", holder=holder, review_status=item.status)
    if item.status == Status.PENDING:  # release of a claim the caller does not hold
        return ReviewConflict("Nobody holds this item.", holder=None, review_status=item.status)
    return ReviewConflict(f"The item is {item.status}.", holder=None, review_status=item.status)


def _pk(item_id) -> uuid.UUID:
    try:
        return item_id if isinstance(item_id, uuid.UUID) else uuid.UUID(str(item_id))
    except ValueError:
        raise ReviewNotFound("No such review item.") from None


def _with_team(data: dict, team_id: int | None) -> dict:
    """An audit entry's data with the run's team (`"team": <id>`), so that team's admins can read it."""
    return data if team_id is None else {**data, "team": team_id}


def _load(item_id) -> ReviewItem:
    try:
        return ReviewItem.objects.select_related("assignee", "decided_by", "decided_by_key").get(pk=_pk(item_id))
    except ReviewItem.DoesNotExist:
        raise ReviewNotFound("No such review item.") from None


def _claim_cutoff(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.PODIUM_REVIEW_CLAIM_TTL_S)


def _record_human_step(item: ReviewItem, reviewer: Reviewer, action: str, released: str, model: str,
                       now: datetime) -> Step:
    """The decision as a step of its run, so the span tree shows who released what."""
    return Step.objects.create(
        run_id=item.run_id, parent_id=item.step_id, key=f"{item.step_key or item.node_id}/review/{item.id.hex[:12]}",
        node_id=item.node_id, node_type="human", model_alias="", provider="", status=StepStatus.SUCCEEDED,
        output=released, confidence=1.0 if action != "reject" else None,
        latency_ms=(now - item.created_at).total_seconds() * 1000,
        attributes={"action": action, "review_id": str(item.id), "reviewer": reviewer.label, "base_model": model},
        started_at=item.created_at, finished_at=now,
    )


def _step_event(step: Step) -> StepFinished:
    identity: StepIdentity = {"run_id": str(step.run_id), "step_id": str(step.id),
                              "parent_id": str(step.parent_id) if step.parent_id else None, "key": step.key,
                              "node_id": step.node_id, "node_type": step.node_type, "model": "", "provider": ""}
    return step_finished(step=identity, ts=now_ms(), started_ts=_ms(step.started_at), prompt=[],
                         status=step.status, output=step.output, error="", confidence=step.confidence, tokens_in=0,
                         tokens_out=0, cost_usd=0.0, latency_ms=step.latency_ms, attributes=step.attributes)


def _publish_on_commit(build, pk, **fields) -> None:
    """After the commit, `build(review=<the item as committed>, **fields)` is published (a builder of events.py)."""
    def send():
        try:
            item = ReviewItem.objects.select_related("assignee", "decided_by", "decided_by_key").get(pk=pk)
        except ReviewItem.DoesNotExist:
            return
        live.publish(build(review=review_summary(item), **fields))
    transaction.on_commit(send)


def _resume_on_commit(run_id) -> None:
    transaction.on_commit(lambda: resume_run_later(str(run_id)))


def resume_run_later(run_id: str) -> None:
    """Hand the decided run back to the runner: a Celery task in production, in-process when embedded."""
    try:
        # A fresh context: the runner must not inherit this request's asgiref executors (they end with it).
        contextvars.Context().run(resume_run, run_id)
    except Exception:  # the decision stands; the runner (or an operator) can resume the run later
        logger.exception("could not resume run %s after its review", run_id)
