"""The console's pages, one module per area. Each handler parses a form, calls the same
service function as the matching API route, and renders a template; errors go back next to
the field at fault."""

from __future__ import annotations

from fastapi import APIRouter

from ipaas.web.pages import account, credentials, dashboard, executions, members, workflows

router = APIRouter(include_in_schema=False)
for _module in (account, dashboard, workflows, credentials, executions, members):
    router.include_router(_module.router)

__all__ = ["router"]
