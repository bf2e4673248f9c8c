"""The API router: every app's API routes, mounted under /api/.

Each route answers at the path its app declares (the seed paths have no
trailing slash, the collections have one) and at the same path with the
trailing slash added or removed, so that a client guessing the other form
gets the same answer instead of a redirect that loses its POST body. Only the
declared form is in the OpenAPI schema: the alias callbacks are plain
functions, which drf-spectacular does not list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.urls import URLPattern, URLResolver, path, re_path
from drf_spectacular.utils import extend_schema
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from alerts import urls as alert_urls
from bots import urls as bot_urls
from conditions import urls as condition_urls
from tradeeon.throttling import BoundedJSONParser


class ObtainTokenView(ObtainAuthToken):
    """POST username and password, get {"token": ...}; throttled per address."""

    throttle_scope = "auth"
    # ObtainAuthToken turns throttling off and pins DRF's plain parsers: a
    # password endpoint needs the throttle, and the bounded parser limits the body.
    throttle_classes = api_settings.DEFAULT_THROTTLE_CLASSES
    # Login forms post form-encoded bodies (Django bounds those itself).
    parser_classes = [BoundedJSONParser, FormParser]


@extend_schema(exclude=True)
class UnknownPathView(APIView):
    """Any other path under /api/: 404 in the API's error shape (after the
    authentication check, like every endpoint), not Django's HTML page."""

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        # Before any method handler: whatever the method, the path is unknown.
        raise NotFound("No such path in the API.")


def _alias(callback: Callable) -> Callable:
    def other_slash_form(request, *args, **kwargs):
        return callback(request, *args, **kwargs)

    # DRF views are CSRF exempt (session authentication checks CSRF itself).
    other_slash_form.csrf_exempt = getattr(callback, "csrf_exempt", False)
    return other_slash_form


def _other_slash_form(pattern: URLPattern) -> URLPattern:
    route = str(pattern.pattern)
    if route.endswith("$"):  # a router's regex
        body = route[:-1]
        other = body[:-1] + "$" if body.endswith("/") else body + "/$"
        return re_path(other, _alias(pattern.callback), pattern.default_args)
    other = route[:-1] if route.endswith("/") else route + "/"
    return path(other, _alias(pattern.callback), pattern.default_args)


def with_both_slash_forms(patterns: Iterable[URLPattern | URLResolver]) -> list:
    """Each pattern followed by its alias, so that a route declared earlier
    (alerts/preview) also wins over a later one (alerts/<id>/) in its other form."""
    routes: list = []
    for pattern in patterns:
        routes.append(pattern)
        route = str(pattern.pattern)
        if isinstance(pattern, URLPattern) and route not in ("", "^$"):
            routes.append(_other_slash_form(pattern))
    return routes


urlpatterns = [
    *with_both_slash_forms(
        [
            path("auth/token/", ObtainTokenView.as_view(), name="api-token"),
            *condition_urls.urlpatterns,
            *alert_urls.urlpatterns,
            *bot_urls.urlpatterns,
        ]
    ),
    # Last, and clear of schema/ and docs/, which tradeeon/urls.py routes
    # after this module.
    re_path(r"^(?!(schema|docs)/?$)", UnknownPathView.as_view(), name="api-unknown-path"),
]
