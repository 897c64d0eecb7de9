"""Model management for admins: pull (with Ollama's progress relayed), show, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import StreamingResponse

from proxy.api.deps import AdminUser, RequestId, StateDep
from proxy.api.routes.llm import ERRORS
from proxy.api.streaming import ndjson_response
from proxy.schemas import MODEL_NAME_PATTERN, PullRequest, ShowModelResponse

router = APIRouter(prefix="/api/admin/models", tags=["admin"])

ModelPath = Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]
ADMIN_ERRORS = {**ERRORS, 403: ERRORS[401]}


@router.post(
    "/pull",
    responses={
        200: {
            "description": "`application/x-ndjson`: Ollama's pull progress objects "
                           "(`status`, `digest`, `total`, `completed`), ending with "
                           "`{\"status\": \"success\"}` or an error line.",
            "content": {"application/x-ndjson": {}},
        },
        **ADMIN_ERRORS,
    },
    summary="Pull a model, streaming progress",
)
async def pull_model(
    body: PullRequest, request: Request, state: StateDep, admin: AdminUser,
    request_id: RequestId,
) -> StreamingResponse:
    async def progress() -> AsyncIterator[dict[str, Any]]:
        async for obj in state.upstream.stream_lines(
            "/api/pull", {"model": body.model, "stream": True}, model=body.model
        ):
            yield obj

    return await ndjson_response(request, progress(), {"X-Request-ID": request_id})


@router.get("/{model}", response_model=ShowModelResponse, responses=ADMIN_ERRORS,
            summary="Show a model's details")
async def show_model(model: ModelPath, state: StateDep, admin: AdminUser) -> Any:
    return await state.upstream.request_json("POST", "/api/show", {"model": model}, model=model)


@router.delete("/{model}", status_code=204, responses=ADMIN_ERRORS, summary="Delete a model")
async def delete_model(model: ModelPath, state: StateDep, admin: AdminUser) -> Response:
    await state.upstream.request_json("DELETE", "/api/delete", {"model": model}, model=model)
    return Response(status_code=204)
