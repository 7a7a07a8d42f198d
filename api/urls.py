from rest_framework.routers import DefaultRouter

from api import views

router = DefaultRouter()
router.register("providers", views.ProviderViewSet)
router.register("models", views.ModelViewSet)
router.register("runs", views.RunViewSet)

urlpatterns = router.urls
