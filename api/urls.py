from django.urls import path
from rest_framework.routers import DefaultRouter

from api import audit, reviews, runs, teams, views, workflows

router = DefaultRouter()
router.register("providers", views.ProviderViewSet)
router.register("models", views.ModelViewSet)
router.register("runs", runs.RunViewSet, basename="run")
router.register("workflows", workflows.WorkflowViewSet, basename="workflow")
router.register("teams", teams.TeamViewSet, basename="team")

urlpatterns = [
    path("models/<str:alias>/calibration/", views.ModelCalibration.as_view(), name="model-calibration"),
] + router.urls + [
    path("audit/", audit.AuditList.as_view(), name="audit-list"),
    path("reviews/", reviews.ReviewList.as_view(), name="review-list"),
    path("reviews/bulk-approve/", reviews.ReviewBulkApprove.as_view(), name="review-bulk-approve"),
    path("reviews/<uuid:pk>/", reviews.ReviewDetail.as_view(), name="review-detail"),
    path("reviews/<uuid:pk>/claim/", reviews.ReviewClaim.as_view(), name="review-claim"),
    path("reviews/<uuid:pk>/release/", reviews.ReviewRelease.as_view(), name="review-release"),
    path("reviews/<uuid:pk>/approve/", reviews.ReviewApprove.as_view(), name="review-approve"),
    path("reviews/<uuid:pk>/edit/", reviews.ReviewEdit.as_view(), name="review-edit"),
    path("reviews/<uuid:pk>/reject/", reviews.ReviewReject.as_view(), name="review-reject"),
]
