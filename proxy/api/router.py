"""Every route module is included here, and only here."""

from fastapi import APIRouter

from proxy.api.routes import (
    admin,
    budgets,
    conversations,
    keys,
    llm,
    ollama,
    openai,
    probes,
    status,
    templates,
    usage,
    ws,
)

ROUTERS = (probes.router, status.router, llm.router, conversations.router, keys.user_router,
           admin.router, keys.admin_router, keys.denials_router, budgets.teams_router,
           budgets.budgets_router, budgets.user_router, usage.router, templates.router,
           ws.router, ollama.router, openai.router)

api_router = APIRouter()
for router in ROUTERS:
    api_router.include_router(router)
