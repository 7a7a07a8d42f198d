"""REST doors into the review queue: list and filter, claim, release, approve, edit, reject, bulk approve.

Who may do what: staff and reviewers may read; members of the `reviewers` group (the
`orchestration.decide_reviewitem` permission) may claim and decide; an API key may read and
decide only with the `reviews:decide` scope. The rules live in `orchestration.reviews`; these
views translate them to HTTP (403 forbidden, 404 unknown item, 409 someone else holds or decided it).

Teams: an item belongs to its run's team. Callers see the items of their teams (api/scoping.py); another
team's item is a 404. Deciding a team's item needs the reviewer or admin role in that team (superusers
always); viewers read.
"""
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from api.errors import STATUS_BY_CODE, http_status
from api.input import RejectUnknownFields, query_choices
from api.scoping import team_filter, visibility
from orchestration.access.apikeys import KeyInfo
from orchestration.errors import ReviewError
from orchestration.models import ReviewItem
from orchestration.reviews.actions import (DECIDE_SCOPE, Reviewer, approve_review, bulk_approve, claim_review,
                                           edit_review, reject_review, release_claim)
from orchestration.reviews.selectors import OPEN_STATUSES, decider_label, may_view


def reviewer_for(request) -> Reviewer:
    if isinstance(request.auth, KeyInfo):
        return Reviewer(key=request.auth)
    return Reviewer(user=request.user)


class CanSeeReviews(permissions.BasePermission):
    message = "Only staff, reviewers, team members and API keys with the 'reviews:decide' scope may see review items."

    def has_permission(self, request, view):
        if isinstance(request.auth, KeyInfo):
            return request.auth.allows(DECIDE_SCOPE)
        return may_view(request.user) or visibility(request).any_access


class ReviewItemSerializer(serializers.ModelSerializer):
    run_status = serializers.CharField(source="run.status", read_only=True)
    run_target = serializers.CharField(source="run.target", read_only=True)
    assignee = serializers.SerializerMethodField()
    decided_by = serializers.SerializerMethodField()
    team = serializers.SerializerMethodField(help_text="The run's team; null = no team")

    class Meta:
        model = ReviewItem
        fields = ["id", "run", "run_status", "run_target", "team", "step_key", "node_id", "reason", "category", "status",
                  "request", "candidates", "default_action", "assignee", "claimed_at", "decided_by", "decided_at",
                  "chosen_index", "edited_output", "comment", "due_at", "created_at"]

    def get_assignee(self, item) -> str | None:
        return item.assignee.get_username() if item.assignee_id else None

    def get_decided_by(self, item) -> str | None:
        return decider_label(item)

    def get_team(self, item) -> str | None:
        return item.run.team.slug if item.run.team_id else None


class ReviewQuerysetMixin:
    permission_classes = [CanSeeReviews]
    serializer_class = ReviewItemSerializer

    def get_queryset(self):
        items = ReviewItem.objects.select_related("run__team", "assignee", "decided_by", "decided_by_key")
        return team_filter(self.request, visibility(self.request).filter(items, "run__team", reviews=True),
                           "run__team")


@extend_schema(parameters=[
    OpenApiParameter("status", str, description="Comma-separated: " + ", ".join(ReviewItem.Status.values)),
    OpenApiParameter("open", bool), OpenApiParameter("reason", str), OpenApiParameter("category", str),
    OpenApiParameter("run", OpenApiTypes.UUID), OpenApiParameter("assignee", str, description='A username or "me".')])
class ReviewList(ReviewQuerysetMixin, generics.ListAPIView):
    """Filters: status (comma-separated), open=true, reason, category, run, assignee (a username or "me")."""

    def get_queryset(self):
        queryset = super().get_queryset()
        params = self.request.query_params
        if statuses := query_choices(self.request, "status", ReviewItem.Status.values):
            queryset = queryset.filter(status__in=statuses)
        if params.get("open", "").lower() in {"1", "true", "yes"}:
            queryset = queryset.filter(status__in=OPEN_STATUSES)
        for name in ("reason", "category"):
            if params.get(name):
                queryset = queryset.filter(**{name: params[name]})
        if params.get("run"):
            try:
                queryset = queryset.filter(run_id=uuid.UUID(params["run"]))
            except ValueError:
                raise serializers.ValidationError({"run": "Not a run id."}) from None
        assignee = params.get("assignee")
        if assignee == "me":
            queryset = queryset.filter(assignee_id=getattr(self.request.user, "pk", None))
        elif assignee:
            queryset = queryset.filter(assignee__username=assignee)
        return queryset


class ReviewDetail(ReviewQuerysetMixin, generics.RetrieveAPIView):
    pass


class CommentInput(RejectUnknownFields, serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)


MAX_CANDIDATE = 999  # an index into a gate's candidates: a handful in practice


class ApproveInput(CommentInput):
    candidate = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_CANDIDATE,
                                         default=None)


class EditInput(CommentInput):
    output = serializers.CharField(trim_whitespace=False, max_length=1_000_000)
    candidate = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=MAX_CANDIDATE,
                                         default=None, help_text="The candidate the text was edited from.")


class BulkApproveInput(CommentInput):
    ids = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=200)


class RefusalSerializer(serializers.Serializer):
    review_id = serializers.UUIDField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    holder = serializers.CharField(allow_null=True, required=False)


class BulkApproveOutput(serializers.Serializer):
    approved = serializers.ListField(child=serializers.UUIDField())
    refused = RefusalSerializer(many=True)


def error_response(exc: ReviewError) -> Response:
    return Response({"detail": exc.message, **exc.details}, status=http_status(exc))


class ReviewAction(APIView):
    """One POST per operation; the body is validated by the view's `input_serializer`."""

    permission_classes = [CanSeeReviews]
    input_serializer = CommentInput

    def act(self, request, pk, data) -> ReviewItem:
        raise NotImplementedError

    def post(self, request, pk):
        body = self.input_serializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            item = self.act(request, pk, body.validated_data)
        except ReviewError as exc:
            return error_response(exc)
        return Response(ReviewItemSerializer(item).data)


@extend_schema(request=None, responses=ReviewItemSerializer)
class ReviewClaim(ReviewAction):
    def act(self, request, pk, data):
        return claim_review(item_id=pk, reviewer=reviewer_for(request))


@extend_schema(request=None, responses=ReviewItemSerializer)
class ReviewRelease(ReviewAction):
    def act(self, request, pk, data):
        return release_claim(item_id=pk, reviewer=reviewer_for(request))


@extend_schema(request=ApproveInput, responses=ReviewItemSerializer)
class ReviewApprove(ReviewAction):
    input_serializer = ApproveInput

    def act(self, request, pk, data):
        return approve_review(item_id=pk, reviewer=reviewer_for(request), candidate=data["candidate"],
                                      comment=data["comment"])


@extend_schema(request=EditInput, responses=ReviewItemSerializer)
class ReviewEdit(ReviewAction):
    input_serializer = EditInput

    def act(self, request, pk, data):
        return edit_review(item_id=pk, reviewer=reviewer_for(request), output=data["output"],
                                   candidate=data["candidate"], comment=data["comment"])


@extend_schema(request=CommentInput, responses=ReviewItemSerializer)
class ReviewReject(ReviewAction):
    def act(self, request, pk, data):
        return reject_review(item_id=pk, reviewer=reviewer_for(request), comment=data["comment"])


@extend_schema(request=BulkApproveInput, responses=BulkApproveOutput)
class ReviewBulkApprove(APIView):
    """Approve the best candidate of each listed item; refusals (409/404) are reported per item."""

    permission_classes = [CanSeeReviews]

    def post(self, request):
        body = BulkApproveInput(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            approved, refused = bulk_approve(item_ids=body.validated_data["ids"],
                                                     reviewer=reviewer_for(request),
                                                     comment=body.validated_data["comment"])
        except ReviewError as exc:
            return error_response(exc)
        refused = [{"review_id": refusal.pop("review_id"), "status": STATUS_BY_CODE[refusal.pop("code")], **refusal}
                   for refusal in refused]
        return Response({"approved": [str(item.id) for item in approved], "refused": refused})
