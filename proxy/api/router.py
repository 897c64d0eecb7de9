"""Every route module is included here, and only here."""

from fastapi import APIRouter

from proxy.api.routes import admin, conversations, llm, status, templates, usage, ws

api_router = APIRouter()
api_router.include_router(status.router)
api_router.include_router(llm.router)
api_router.include_router(conversations.router)
api_router.include_router(admin.router)
api_router.include_router(usage.router)
api_router.include_router(templates.router)
api_router.include_router(ws.router)
