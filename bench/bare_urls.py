"""The reference server's URLconf: one bare async view, plus the readiness probe."""

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from api.views.health import readyz

ANSWER = b'{"messages":[{"id":"0","partition":0,"offset":"0-0","duplicate":false}]}'


@csrf_exempt  # as DRF's APIView.as_view() does for the API's views
async def bare(request: HttpRequest) -> HttpResponse:
    """Reads the body and answers a small JSON document, like a publish without the work."""
    _ = request.body
    return HttpResponse(ANSWER, status=201, content_type="application/json")


urlpatterns = [
    path("readyz", readyz),
    path("bare", bare),
]
