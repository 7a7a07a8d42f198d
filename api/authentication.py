"""DRF authentication by API key (Authorization: Bearer pdm_…), sharing the /v1 key cache."""
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from orchestration.access.apikeys import load_key


class APIKeyUser(AnonymousUser):
    """The request's principal when it came with an API key rather than a session."""

    def __init__(self, key):
        self.key = key

    @property
    def is_authenticated(self):
        return True

    def __str__(self):
        return f"key:{self.key.prefix}"


class APIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header.lower().startswith("bearer "):
            return None
        info = load_key(header[7:].strip())
        if info is None:
            raise exceptions.AuthenticationFailed("Incorrect or revoked API key.")
        return APIKeyUser(info), info

    def authenticate_header(self, request):
        return "Bearer"


class APIKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Documents the API key in the OpenAPI schema (`Authorization: Bearer pdm_…`)."""

    target_class = "api.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer pdm_…`"}
