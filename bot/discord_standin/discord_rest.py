"""Routing, request parsing, error bodies and message validation for the fake Discord REST API."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import BodyPartReader, web

from .discord_models import RecordedFile, RecordedRequest
from .discord_payloads import FLAG_IS_COMPONENTS_V2, JSON, dumps

API_PREFIX = "/api/v10"


class ApiError(Exception):
    """Raised by a handler to answer with a Discord error body."""

    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: JSON = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def form_error(path: list[str | int], code: str, message: str) -> ApiError:
    """A 400 50035 "Invalid Form Body" with Discord's nested ``errors`` object."""
    node: JSON = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path):
        node = {str(part): node}
    return ApiError(400, 50035, "Invalid Form Body", node)


# Common errors (api-docs: topics/opcodes-and-status-codes).
def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_interaction() -> ApiError:
    return ApiError(404, 10062, "Unknown interaction")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


def missing_access() -> ApiError:
    return ApiError(403, 50001, "Missing Access")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


@dataclass
class Reply:
    """A handler's answer."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[RecordedRequest], Awaitable[Reply]]


@dataclass
class Route:
    method: str
    template: str
    handler: Handler
    auth: bool
    regex: re.Pattern[str]


class Router:
    """Maps (method, path) to a handler; keeps the templated path for recording."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, template: str, handler: Handler, *, auth: bool = True) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", re.escape(template).replace(r"\{", "{").replace(r"\}", "}"))
        self.routes.append(Route(method, template, handler, auth, re.compile(f"^{pattern}$")))

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known); ``path_known`` is True when only the method was wrong."""
        path_known = False
        for route in self.routes:
            found = route.regex.match(path)
            if found is None:
                continue
            path_known = True
            if route.method == method:
                return route, found.groupdict(), True
        return None, {}, path_known


def json_response(reply: Reply) -> web.Response:
    headers = {"Via": "1.1 google", **reply.headers}
    if reply.status == 204 or reply.body is None:
        return web.Response(status=reply.status, headers=headers)
    # Exactly "application/json": discord.py does not parse "application/json; charset=utf-8".
    headers["Content-Type"] = "application/json"
    return web.Response(status=reply.status, body=dumps(reply.body), headers=headers)


async def parse_body(request: web.Request) -> tuple[Any, list[RecordedFile]]:
    """JSON body, or multipart ``payload_json`` + ``files[n]`` parts."""
    ctype = request.headers.get("Content-Type", "")
    if ctype.startswith("multipart/"):
        reader = await request.multipart()
        payload: Any = None
        form: JSON = {}
        files: list[RecordedFile] = []
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # nested multipart: not used by Discord clients
            data = await part.read(decode=False)
            name = part.name or ""
            filename = part.filename
            if filename is not None or name.startswith("files["):
                files.append(
                    RecordedFile(
                        field_name=name,
                        filename=filename or name,
                        content_type=part.headers.get("Content-Type"),
                        data=bytes(data),
                    )
                )
            elif name == "payload_json":
                payload = json.loads(bytes(data).decode())
            else:
                form[name] = bytes(data).decode(errors="replace")
        if payload is None and form:
            payload = form
        return payload, files
    raw = await request.read()
    if not raw:
        return None, []
    if ctype.startswith("application/json"):
        return json.loads(raw.decode()), []
    return raw.decode(errors="replace"), []


def file_index(recorded: RecordedFile) -> int | None:
    found = re.fullmatch(r"files\[(\d+)\]", recorded.field_name) or re.fullmatch(r"file(\d*)", recorded.field_name)
    if found is None:
        return None
    return int(found.group(1) or 0)


# ---------------------------------------------------------------------------------------------------------------
# Validation (the limits Discord enforces and discord.py does not always check)
# ---------------------------------------------------------------------------------------------------------------


def _walk_components(nodes: list[Any]) -> list[JSON]:
    out: list[JSON] = []
    stack = list(nodes)
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        out.append(node)
        for key in ("components", "items"):
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in ("component", "accessory"):
            if isinstance(node.get(key), dict):
                stack.append(node[key])
    return out


def validate_components(components: Any, flags: int) -> None:
    if components is None:
        return
    if not isinstance(components, list):
        raise form_error(["components"], "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType.")
    every = _walk_components(components)
    for node in every:
        custom_id = node.get("custom_id")
        if custom_id is not None and not 1 <= len(str(custom_id)) <= 100:
            raise form_error(["components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        if node.get("type") == 2 and node.get("style") != 5 and node.get("style") != 6 and not custom_id:
            raise form_error(["components"], "COMPONENT_CUSTOM_ID_REQUIRED", "A custom id is required")
        if node.get("type") == 2 and node.get("label") is not None and len(str(node["label"])) > 80:
            raise form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 80 or fewer in length.")
    if flags & FLAG_IS_COMPONENTS_V2:
        if len(every) > 40:
            raise form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
        return
    if len(components) > 5:
        raise form_error(["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    for index, row in enumerate(components):
        if not isinstance(row, dict) or row.get("type") != 1:
            raise form_error(["components", index], "UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).')
        if len(row.get("components") or []) > 5:
            raise form_error(["components", index, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer.")


def validate_embeds(embeds: Any) -> None:
    if embeds is None:
        return
    if not isinstance(embeds, list) or len(embeds) > 10:
        raise form_error(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    limits = {"title": 256, "description": 4096}
    for index, embed in enumerate(embeds):
        for key, limit in limits.items():
            value = str(embed.get(key) or "")
            total += len(value)
            if len(value) > limit:
                raise form_error(["embeds", index, key], "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(["embeds", index, "fields"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for fi, fld in enumerate(fields):
            name, value = str(fld.get("name") or ""), str(fld.get("value") or "")
            total += len(name) + len(value)
            if len(name) > 256 or len(value) > 1024:
                raise form_error(["embeds", index, "fields", fi], "BASE_TYPE_MAX_LENGTH", "Field too long.")
        total += len(str((embed.get("footer") or {}).get("text") or ""))
        total += len(str((embed.get("author") or {}).get("name") or ""))
    if total > 6000:
        raise form_error(["embeds"], "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def validate_message_body(
    body: JSON, files: list[RecordedFile], *, creating: bool, current_flags: int, size_limit: int
) -> None:
    """Raise ``ApiError`` like Discord does for an invalid create/edit message body."""
    content = body.get("content")
    if content is not None and len(str(content)) > 2000:
        raise form_error(["content"], "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    flags = int(body.get("flags") or 0) | current_flags
    validate_embeds(body.get("embeds"))
    validate_components(body.get("components"), flags)
    if flags & FLAG_IS_COMPONENTS_V2 and (body.get("content") or body.get("embeds")):
        raise form_error(
            ["content"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used when using MessageFlags.IS_COMPONENTS_V2",
        )
    if (
        current_flags & FLAG_IS_COMPONENTS_V2
        and body.get("flags") is not None
        and not int(body["flags"]) & FLAG_IS_COMPONENTS_V2
    ):
        raise form_error(["flags"], "MESSAGE_CANNOT_REMOVE_COMPONENTS_V2_FLAG", "Cannot remove the flag.")
    if len(files) > 10:
        raise form_error(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    if sum(len(f.data) for f in files) > size_limit:
        raise ApiError(413, 40005, "Request entity too large")
    if creating and not (
        body.get("content")
        or body.get("embeds")
        or body.get("components")
        or files
        or body.get("sticker_ids")
        or body.get("poll")
    ):
        raise ApiError(400, 50006, "Cannot send an empty message")


_NAME_RE = re.compile(r"^[-_'\w]{1,32}$")


def validate_commands(commands: Any) -> None:
    """The application-command limits of api-docs interactions/application-commands (subset)."""
    if not isinstance(commands, list):
        raise form_error([], "MODEL_TYPE_CONVERT", "Only iterables may be used in a ListType.")
    if len(commands) > 110:
        raise form_error([], "BASE_TYPE_MAX_LENGTH", "Must be 110 or fewer in length.")
    seen: set[tuple[str, int]] = set()
    for index, cmd in enumerate(commands):
        ctype = int(cmd.get("type") or 1)
        name = str(cmd.get("name") or "")
        key = (name, ctype)
        if key in seen:
            raise form_error([index, "name"], "APPLICATION_COMMANDS_DUPLICATE_NAME", f"Duplicate name {name}")
        seen.add(key)
        permissions = cmd.get("default_member_permissions")
        if permissions is not None and not (
            (type(permissions) is int and permissions >= 0) or (isinstance(permissions, str) and permissions.isdigit())
        ):
            raise form_error(
                [index, "default_member_permissions"], "NUMBER_TYPE_COERCE", f'Value "{permissions}" is not int.'
            )
        if ctype == 1:
            _validate_chat_input(cmd, [index])
        elif not 1 <= len(name) <= 32:
            raise form_error([index, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")


def _validate_chat_input(node: JSON, path: list[str | int]) -> None:
    name = str(node.get("name") or "")
    if not _NAME_RE.match(name) or name != name.lower():
        raise form_error([*path, "name"], "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid")
    description = str(node.get("description") or "")
    if not 1 <= len(description) <= 100:
        raise form_error([*path, "description"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
    options = node.get("options") or []
    if len(options) > 25:
        raise form_error([*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    for oi, opt in enumerate(options):
        opt_path = [*path, "options", oi]
        if int(opt.get("type") or 0) in (1, 2):
            _validate_chat_input(opt, opt_path)
            continue
        _validate_chat_input({**opt, "options": []}, opt_path)
        if opt.get("required"):
            if seen_optional:
                raise form_error(
                    opt_path,
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            raise form_error([*opt_path, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if choices and opt.get("autocomplete"):
            raise form_error(opt_path, "AUTOCOMPLETE_CHOICES", "Autocomplete cannot be used with choices")
