"""Who may reach the service: a browser page of another site may not write (a multipart
POST needs no preflight, so the browser would send it to a loopback service unasked) unless
the operator allowed its origin (`digits serve --cors-origin`), and a DNS-rebinding page,
which reaches it under its own name, may not even read."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import Response

from digits.serving.errors import ApiError, error_response

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # read-only: another site's page may send these
SAME_SITE_FETCHES = ("same-origin", "none")  # Sec-Fetch-Site of the page's own fetch, a typed URL
CORS_METHODS = ("GET", "POST")
# What an allowed page may send beyond the safelisted headers: a bearer token for
# /v1/feedback, and the OIP binary extension's header.
CORS_HEADERS = ("Authorization", "Inference-Header-Content-Length")
CORS_EXPOSED = ("X-Request-ID", "Retry-After", "Inference-Header-Content-Length")


class SameOrigin:
    """ASGI middleware: refuse a write that a browser sent from another site's page, unless
    its origin is one of `allowed_origins`. Such a page may POST a form to a loopback service
    with no preflight; the browser names it in Origin and Sec-Fetch-Site. Clients that send
    neither (curl, scripts) are answered."""

    def __init__(self, app, allowed_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = cross_site(Headers(scope=scope), self.allowed_origins)
            if problem:
                await error_response(ApiError(403, problem))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_site(headers: Headers, allowed_origins: frozenset[str] = frozenset()) -> str | None:
    """Why a write comes from another site, or None: its Origin must be this service's or
    an allowed one."""
    if headers.get("origin") in allowed_origins:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE_FETCHES:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin, host = headers.get("origin"), headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"cross-site request refused (Origin {origin!r} is not this service, {host!r})"
    return None


class Cors(CORSMiddleware):
    """Starlette's CORS middleware for the allowed origins only: it answers their preflights
    and names them in Access-Control-Allow-Origin; a preflight it refuses (another origin, a
    method or header not allowed) is a JSON 400 like every other refusal (its own is text)."""

    def __init__(self, app, allowed_origins: Sequence[str], max_age: int) -> None:
        # Private network: Chrome asks before a public site's page may reach a loopback
        # service; the operator allowed this origin by name.
        super().__init__(app, allow_origins=list(allowed_origins), allow_methods=CORS_METHODS,
                         allow_headers=CORS_HEADERS, expose_headers=CORS_EXPOSED,
                         allow_private_network=True, max_age=max_age)
        self.allowed = ", ".join(allowed_origins)

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        failed = bytes(answer.body).decode().removeprefix("Disallowed CORS ")
        keep = {name: value for name, value in answer.headers.items()
                if name.startswith("access-control-") or name == "vary"}
        reason = (f"CORS preflight refused ({failed}): this service allows {self.allowed}, "
                  f"methods {', '.join(CORS_METHODS)}")
        return error_response(ApiError(400, reason, keep))


class HostCheck:
    """ASGI middleware: Starlette's TrustedHostMiddleware decides which Host headers are
    answered; its refusal is answered as every other one is, a JSON 400 (its own is text)."""

    def __init__(self, app, allowed_hosts: Sequence[str]) -> None:
        self.app = app
        self.allowed_hosts = list(allowed_hosts)

    async def __call__(self, scope, receive, send) -> None:
        passed = False

        async def allowed(scope, receive, send) -> None:
            nonlocal passed
            passed = True

        check = TrustedHostMiddleware(allowed, self.allowed_hosts, www_redirect=False)
        await check(scope, receive, discard)  # answers nothing itself when the host passes
        if passed:
            await self.app(scope, receive, send)
            return
        names = ", ".join(self.allowed_hosts)
        refusal = ApiError(400, f"Invalid host header: this service answers to {names} only")
        await error_response(refusal)(scope, receive, send)


async def discard(message) -> None:
    """Where Starlette's plain-text refusal goes: HostCheck answers in its place."""
