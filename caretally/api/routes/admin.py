"""Users and API tokens of the caller's organization."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from caretally.api import problems
from caretally.api.deps import ServiceDep, TokensAdmin, UsersAdmin, UsersReader
from caretally.api.schemas import (
    TokenCreate,
    TokenCreatedPublic,
    TokenPublic,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from caretally.services import accounts

router = APIRouter(tags=["admin"])

UserId = Annotated[int, Path(ge=1, le=2**31 - 1)]
TokenId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get(
    "/users",
    response_model=list[UserPublic],
    responses=problems.responses(*problems.GUARDED),
    summary="Users of the organization",
)
def list_users(actor: UsersReader, service: ServiceDep) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in accounts.list_users(service.engine, actor.org_id)]


@router.post(
    "/users",
    status_code=201,
    response_model=UserPublic,
    responses=problems.responses(*problems.GUARDED, 409),
    summary="Add a user (the password has at least 15 characters)",
)
def add_user(body: UserCreate, actor: UsersAdmin, service: ServiceDep) -> UserPublic:
    user = accounts.add_user(
        service.engine,
        actor,
        email=body.email,
        password=body.password,
        role=body.role.value,
        display_name=body.display_name,
    )
    return UserPublic.model_validate(user)


@router.patch(
    "/users/{user_id}",
    response_model=UserPublic,
    responses=problems.responses(*problems.GUARDED, 404, 409),
    summary="Change a user's role, name or active flag (deactivating ends their sessions)",
)
def update_user(user_id: UserId, body: UserUpdate, actor: UsersAdmin, service: ServiceDep) -> UserPublic:
    user = accounts.update_user(
        service.engine,
        actor,
        user_id,
        role=body.role.value if body.role else None,
        active=body.active,
        display_name=body.display_name,
    )
    return UserPublic.model_validate(user)


@router.get(
    "/tokens",
    response_model=list[TokenPublic],
    responses=problems.responses(*problems.GUARDED),
    summary="API tokens of the organization (never their secrets)",
)
def list_tokens(actor: UsersReader, service: ServiceDep) -> list[TokenPublic]:
    return [TokenPublic.model_validate(t) for t in accounts.list_tokens(service.engine, actor.org_id)]


@router.post(
    "/tokens",
    status_code=201,
    response_model=TokenCreatedPublic,
    responses=problems.responses(*problems.GUARDED, 409),
    summary="Create an API token; its secret is in this answer only",
)
def create_token(body: TokenCreate, actor: TokensAdmin, service: ServiceDep) -> TokenCreatedPublic:
    made = accounts.create_token(service.engine, actor, name=body.name, role=body.role.value)
    return TokenCreatedPublic(**TokenPublic.model_validate(made.record).model_dump(), token=made.secret)


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    responses=problems.responses(*problems.GUARDED, 404, 409),
    summary="Revoke an API token",
)
def revoke_token(token_id: TokenId, actor: TokensAdmin, service: ServiceDep) -> Response:
    accounts.revoke_token(service.engine, actor, token_id=token_id)
    return Response(status_code=204)
