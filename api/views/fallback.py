"""Any other path under /v1 is a problem+json 404, in DEBUG too (where Django would
otherwise answer with its HTML debug page)."""

from django.http import HttpRequest, HttpResponse

from api.errors import problem_response


async def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return problem_response(404, "not_found", "Not found", "No such resource.")
