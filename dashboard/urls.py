from django.contrib.auth.views import LogoutView
from django.urls import path, reverse_lazy

from dashboard import access, reviews, views

app_name = "dashboard"
# One line per page; other dashboard areas (reviews) add theirs here. Every page has a case in
# tests/test_team_isolation_live.py (a page without one fails it).
urlpatterns = [
    path("", views.overview, name="overview"),
    path("runs/", views.runs, name="runs"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run-detail"),
    path("models/", views.models, name="models"),
    path("reviews/", reviews.review_queue, name="review-queue"),
    path("reviews/<uuid:review_id>/", reviews.review_detail, name="review-detail"),
    # Members of a team sign in here (the admin's login is for staff only).
    path("login/", access.login, name="login"),
    path("logout/", LogoutView.as_view(next_page=reverse_lazy("dashboard:login")), name="logout"),
]
