from django.urls import path

from dashboard import reviews, views

app_name = "dashboard"
# One line per page; other dashboard areas (reviews) add theirs here.
urlpatterns = [
    path("", views.overview, name="overview"),
    path("runs/", views.runs, name="runs"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run-detail"),
    path("models/", views.models, name="models"),
    path("reviews/", reviews.review_queue, name="review-queue"),
    path("reviews/<uuid:review_id>/", reviews.review_detail, name="review-detail"),
]
