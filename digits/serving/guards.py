"""Who may reach the service: a browser page of another site may not write (a multipart
POST needs no preflight, so the browser would send it to a loopback service unasked), and a
DNS-rebinding page, which reaches it under its own name, may not even read."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware

from digits.serving.errors import ApiError, error_response

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")  # read-only: another site's page may send these
SAME_SITE_FETCHES = ("same-origin", "none")  # Sec-Fetch-Site of the page's own fetch, a typed URL


class SameOrigin:
    """ASGI middleware: refuse a write that a browser sent from another site's page. Such a
    page may POST a form to a loopback service with no preflight; the browser names it in
    Origin and Sec-Fetch-Site. Clients that send neither (curl, scripts) are answered."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            problem = cross_site(Headers(scope=scope))
            if problem:
                await error_response(ApiError(403, problem))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def cross_site(headers: Headers) -> str | None:
    """Why a write comes from another site, or None: its Origin must be this service's."""
    site = headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE_FETCHES:
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    origin, host = headers.get("origin"), headers.get("host", "")
    if origin is not None and urlsplit(origin).netloc.lower() != host.lower():
        return f"cross-site request refused (Origin {origin!r} is not this service, {host!r})"
    return None


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
