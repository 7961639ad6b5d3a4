"""The device-facing HTTP API (EVE API v2, prefix ``/api/v2/edgedevice``).

One module per group of endpoints; :func:`make_app` wires them to their paths.  The API has no
admin endpoints at all: administration happens on the state directory (see ``controller.cli``),
so nothing an operator can do is reachable over the network.
"""

from __future__ import annotations

from aiohttp import web

from controller.api import attest, config, onboarding, reports
from controller.api.common import request_log
from controller.api.context import CONTEXT, ApiContext, ApiSettings
from controller.api.guard import GUARD, Guard
from controller.records import ReportKind

PREFIX = "/api/v2/edgedevice"

__all__ = ["PREFIX", "ApiContext", "ApiSettings", "make_app"]


def make_app(ctx: ApiContext) -> web.Application:
    """An aiohttp application serving the device API from ``ctx``; the caller runs it.

    The application owns the upload guard and its worker thread (:mod:`controller.api.guard`),
    closed by the application's cleanup.
    """
    app = web.Application(middlewares=[request_log], client_max_size=ctx.settings.max_body_bytes)
    app[CONTEXT] = ctx
    guard = Guard(ctx.store, ctx.settings)
    app[GUARD] = guard

    async def close_guard(_: web.Application) -> None:
        await guard.close()

    app.on_cleanup.append(close_guard)
    dev = f"{PREFIX}/id/{{uuid}}"
    app.router.add_get(f"{PREFIX}/ping", onboarding.ping)
    app.router.add_get(f"{PREFIX}/certs", onboarding.certs)
    app.router.add_post(f"{PREFIX}/certs", onboarding.certs)
    app.router.add_post(f"{PREFIX}/register", onboarding.register)
    app.router.add_post(f"{PREFIX}/uuid", onboarding.uuid)
    app.router.add_post(f"{dev}/config", config.config)
    app.router.add_post(f"{dev}/attest", attest.attest)
    for kind in ReportKind:
        app.router.add_post(f"{dev}/{kind.value}", reports.report_handler(kind))
    app.router.add_post(f"{dev}/newlogs", reports.device_logs)
    app.router.add_post(f"{dev}/apps/instanceid/{{app}}/newlogs", reports.app_logs)
    return app
