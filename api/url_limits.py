"""A NUL (%00) in a path or query string is a 400 on every Django page.

PostgreSQL cannot compare text holding one, so any lookup or filter it reached (a slug, `?status=`,
a username) would fail there with a 500. (No DRF here: DRF's views import the parser settings, and
middleware loads first.)
"""
from asgiref.sync import iscoroutinefunction
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware


def nul_refusal(request) -> JsonResponse | None:
    if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
        return JsonResponse({"detail": "The URL holds a NUL character (%00)."}, status=400)
    return None


@sync_and_async_middleware
def reject_nul_in_url(get_response):
    if iscoroutinefunction(get_response):  # no thread hop for async requests
        async def middleware(request):
            return nul_refusal(request) or await get_response(request)
    else:
        def middleware(request):
            return nul_refusal(request) or get_response(request)
    return middleware
