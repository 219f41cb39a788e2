"""Builders of INTERACTION_CREATE payloads (slash, autocomplete, context menu, component, modal submit)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping, Sequence
from types import EllipsisType
from typing import Any

from .discord_models import FakeAttachment, FakeChannel, FakeGuild, FakeMessage, FakeRole
from .discord_payloads import (
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    JSON,
    OPT_ATTACHMENT,
    OPT_CHANNEL,
    OPT_MENTIONABLE,
    OPT_ROLE,
    OPT_SUB_COMMAND,
    OPT_SUB_COMMAND_GROUP,
    OPT_USER,
    infer_option_type,
)
from .discord_state import DM_PERMISSIONS, FakeState

_FROM_MESSAGE: EllipsisType = ...


class InteractionBuilders(FakeState):
    """Complete interaction payloads that discord.py parses like Discord's."""

    def slash_command_payload(
        self,
        name: str,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        options: Sequence[JSON] | Mapping[str, Any] = (),
        attachments: Sequence[JSON] = (),
        permissions: int | None = None,
        app_permissions: int | None = None,
        locale: str = "en-US",
    ) -> JSON:
        """A complete INTERACTION_CREATE ``d`` for a chat-input command (type 2, data.type 1).

        ``options`` is either Discord's raw option list or a mapping ``name -> value``; an attachment value is an
        attachment object from :meth:`upload_attachment` (added to ``data.resolved.attachments``)."""
        payload = self._interaction_base(
            INTERACTION_APPLICATION_COMMAND,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            permissions=permissions,
            locale=locale,
            app_permissions=app_permissions,
        )
        data, cmd = self._command_data(name, 1, guild_id)
        resolved: JSON = {}
        for att in attachments:
            resolved.setdefault("attachments", {})[str(att["id"])] = att
        schema = (cmd or {}).get("options", [])
        built = self._build_options(options, schema, resolved, guild_id, _invoker_permissions(payload))
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        return payload

    def autocomplete_payload(
        self,
        name: str,
        *,
        focused: str,
        value: Any = "",
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        options: Sequence[JSON] | Mapping[str, Any] = (),
        locale: str = "en-US",
    ) -> JSON:
        """INTERACTION_CREATE type 4: the option ``focused`` is being typed with partial ``value``."""
        payload = self._interaction_base(
            INTERACTION_AUTOCOMPLETE,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            permissions=None,
            locale=locale,
            app_permissions=None,
        )
        data, cmd = self._command_data(name, 1, guild_id)
        schema = (cmd or {}).get("options", [])
        resolved: JSON = {}
        built = self._build_options(options, schema, resolved, guild_id, _invoker_permissions(payload))
        if resolved:
            data["resolved"] = resolved
        focused_type = next((int(o["type"]) for o in schema if o.get("name") == focused), 3)
        built.append({"type": focused_type, "name": focused, "value": value, "focused": True})
        data["options"] = built
        payload["data"] = data
        return payload

    def message_command_payload(
        self,
        name: str,
        *,
        target: FakeMessage | JSON,
        user_id: int,
        guild_id: int | EllipsisType | None = _FROM_MESSAGE,
        channel_id: int | EllipsisType = _FROM_MESSAGE,
    ) -> JSON:
        """INTERACTION_CREATE for a message context-menu command (data.type 3, resolved.messages)."""
        target_payload = self.message_payload(target) if isinstance(target, FakeMessage) else target
        gid = _guild_of(target_payload) if guild_id is ... else guild_id
        cid = int(target_payload["channel_id"]) if channel_id is ... else channel_id
        payload = self._interaction_base(
            INTERACTION_APPLICATION_COMMAND,
            user_id=user_id,
            guild_id=gid,
            channel_id=cid,
            permissions=None,
            locale="en-US",
            app_permissions=None,
        )
        data, _ = self._command_data(name, 3, gid)
        data["target_id"] = str(target_payload["id"])
        data["resolved"] = {"messages": {str(target_payload["id"]): target_payload}}
        payload["data"] = data
        return payload

    def component_payload(
        self,
        *,
        custom_id: str,
        message: FakeMessage | JSON,
        user_id: int,
        guild_id: int | EllipsisType | None = _FROM_MESSAGE,
        channel_id: int | EllipsisType = _FROM_MESSAGE,
        component_type: int = 2,
        values: Sequence[str] | None = None,
        permissions: int | None = None,
    ) -> JSON:
        """INTERACTION_CREATE type 3: a click on ``custom_id`` of ``message`` (select: pass ``values``)."""
        msg_payload = self.message_payload(message) if isinstance(message, FakeMessage) else message
        gid = _guild_of(msg_payload) if guild_id is ... else guild_id
        cid = int(msg_payload["channel_id"]) if channel_id is ... else channel_id
        payload = self._interaction_base(
            INTERACTION_COMPONENT,
            user_id=user_id,
            guild_id=gid,
            channel_id=cid,
            permissions=permissions,
            locale="en-US",
            app_permissions=None,
        )
        data: JSON = {"custom_id": custom_id, "component_type": component_type}
        if values is not None or component_type != 2:
            data["values"] = list(values or [])
        payload["data"] = data
        payload["message"] = msg_payload
        return payload

    def modal_submit_payload(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        modal: JSON | None = None,
        custom_id: str | None = None,
        values: Mapping[str, Any] | None = None,
        components: list[JSON] | None = None,
        message: FakeMessage | JSON | None = None,
    ) -> JSON:
        """INTERACTION_CREATE type 5. Pass the ``modal`` the bot opened (``rec.modal``) and ``values`` by
        custom_id (text → str, selects/checkbox groups → list[str], file upload → list of attachment objects,
        radio → str, checkbox → bool); or raw ``components``."""
        payload = self._interaction_base(
            INTERACTION_MODAL_SUBMIT,
            user_id=user_id,
            guild_id=guild_id,
            channel_id=channel_id,
            permissions=None,
            locale="en-US",
            app_permissions=None,
        )
        resolved: JSON = {}
        if components is None:
            if modal is None:
                raise ValueError("pass modal= (the bot's modal) or components=")
            counter = iter(range(1, 10_000))
            components = [_fill_modal_component(c, values or {}, resolved, counter) for c in modal["components"]]
        data: JSON = {"custom_id": custom_id or (modal or {}).get("custom_id"), "components": components}
        if resolved:
            data["resolved"] = resolved
        payload["data"] = data
        if message is not None:
            payload["message"] = self.message_payload(message) if isinstance(message, FakeMessage) else message
        return payload

    def _interaction_base(
        self,
        itype: int,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int,
        permissions: int | None,
        locale: str,
        app_permissions: int | None,
    ) -> JSON:
        iid = self._ids.next()
        user = self._ensure_user(user_id)
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": itype,
            "token": f"fake-itoken.{iid}.{secrets.token_urlsafe(32)}",
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.attachment_size_limit,
            "channel_id": str(channel_id),
        }
        if guild_id is not None:
            guild = self.guilds.get(guild_id)
            if guild is None:
                raise ValueError(f"unknown guild {guild_id}: call add_guild first")
            channel = self.channels.get(channel_id)
            if channel is None:
                channel = self.add_channel(guild_id, channel_id)
            member = guild.members.get(user_id) or self.set_member(guild_id, user_id)
            perms = permissions if permissions is not None else guild.member_permissions(user_id)
            app_perms = app_permissions if app_permissions is not None else self._app_permissions(guild, channel)
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member={**guild.member_to_payload(member, user), "permissions": str(perms)},
                channel={**self._channel_payload(channel), "permissions": str(perms)},
                app_permissions=str(app_perms),
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            if channel_id not in self.channels:
                self.add_channel(None, channel_id, recipient_id=user_id)
            channel = self.channels[channel_id]
            payload.update(
                user=user.to_payload(),
                channel={**self._channel_payload(channel), "permissions": str(DM_PERMISSIONS)},
                app_permissions=str(app_permissions if app_permissions is not None else DM_PERMISSIONS),
                authorizing_integration_owners={"0": "0"},
                context=1,
            )
        return payload

    def _find_command(self, name: str, ctype: int, guild_id: int | None) -> tuple[JSON | None, bool]:
        """(registered command, is_guild_command)."""
        if guild_id is not None:
            for cmd in self._commands.get(guild_id, {}).values():
                if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
                    return cmd, True
        for cmd in self._commands.get(None, {}).values():
            if cmd["name"] == name and int(cmd.get("type", 1)) == ctype:
                return cmd, False
        return None, False

    def _command_data(self, name: str, ctype: int, guild_id: int | None) -> tuple[JSON, JSON | None]:
        cmd, is_guild = self._find_command(name, ctype, guild_id)
        if cmd is not None:
            command_id = int(cmd["id"])
        else:
            command_id = self._fake_command_ids.setdefault(f"{ctype}:{name}", self._ids.next())
        data: JSON = {"id": str(command_id), "name": name, "type": ctype}
        if is_guild and guild_id is not None:
            data["guild_id"] = str(guild_id)
        return data, cmd

    def _build_options(
        self,
        options: Sequence[JSON] | Mapping[str, Any],
        schema: Sequence[JSON],
        resolved: JSON,
        guild_id: int | None,
        permissions: int | None,
    ) -> list[JSON]:
        """Normalise options: a mapping name→value, or Discord's raw dicts (``type`` optional). Types come from the
        registered schema, else from the value. A subcommand or group is a raw dict with ``options`` or, in a
        mapping, a mapping of its own options. Attachment objects and user, channel, role or mentionable ids (or a
        :class:`FakeChannel`/:class:`FakeRole`) become ids whose objects go into ``resolved``; ``permissions``
        (the invoking member's) are what a resolved channel reports as the member's permissions in it."""
        specs = {str(o["name"]): o for o in schema}
        raw: list[JSON]
        if isinstance(options, Mapping):
            raw = []
            for name, value in options.items():
                nested = _is_nested(specs.get(name), value)
                raw.append({"name": name, "options": value} if nested else {"name": name, "value": value})
        else:
            raw = [dict(o) for o in options]
        out: list[JSON] = []
        for opt in raw:
            spec = specs.get(str(opt["name"]))
            opt["type"] = int(opt["type"]) if "type" in opt else _option_type(spec, opt)
            if "options" in opt:
                sub_schema: list[JSON] = (spec or {}).get("options", [])
                opt["options"] = self._build_options(opt["options"], sub_schema, resolved, guild_id, permissions)
            elif opt.get("value") is not None:
                opt["value"] = self._option_value(opt, spec or {}, resolved, guild_id, permissions)
            out.append(opt)
        return out

    def _option_value(
        self, opt: JSON, spec: JSON, resolved: JSON, guild_id: int | None, permissions: int | None
    ) -> Any:
        """The option's ``value`` as Discord sends it, adding what it refers to to ``resolved``."""
        otype, value = opt["type"], opt["value"]
        if otype == OPT_ATTACHMENT:
            if isinstance(value, FakeAttachment):
                value = value.to_payload()
            if isinstance(value, dict):
                resolved.setdefault("attachments", {})[str(value["id"])] = value
                return str(value["id"])
            return value
        if otype not in (OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE):
            return value
        target = int(value.id) if isinstance(value, FakeChannel | FakeRole) else int(value)
        guild = self.guilds.get(guild_id) if guild_id is not None else None
        if otype == OPT_USER or (otype == OPT_MENTIONABLE and (guild is None or target not in guild.roles)):
            self._resolve_user(target, resolved, guild)
            return str(target)
        if guild is None:
            raise ValueError(f"option {opt['name']!r}: channel and role options need a guild interaction")
        if otype == OPT_CHANNEL:
            channel = self.channels.get(target) or self.add_channel(guild.id, target, name=f"channel-{target}")
            if channel.guild_id != guild.id:
                raise ValueError(f"option {opt['name']!r}: channel {target} is not in guild {guild.id}")
            allowed = spec.get("channel_types")
            if allowed and channel.type not in allowed:
                # The Discord client offers only channels of the option's channel_types.
                raise ValueError(f"option {opt['name']!r}: a channel of type {channel.type} is not in {allowed}")
            assert permissions is not None  # a guild interaction's member has them
            resolved.setdefault("channels", {})[str(target)] = self._resolved_channel_payload(channel, permissions)
        else:
            role = guild.roles.get(target) or self.add_role(guild.id, target, name=f"role-{target}")
            resolved.setdefault("roles", {})[str(target)] = role.to_payload()
        return str(target)

    def _resolve_user(self, user_id: int, resolved: JSON, guild: FakeGuild | None) -> None:
        """``resolved.users`` (and ``members`` with the member's permissions, when it is one) for ``user_id``."""
        user = self._ensure_user(user_id)
        resolved.setdefault("users", {})[str(user_id)] = user.to_payload()
        if guild is not None and user_id in guild.members:
            member = guild.member_to_payload(guild.members[user_id], user)
            member.pop("user")
            member["permissions"] = str(guild.member_permissions(user_id))
            resolved.setdefault("members", {})[str(user_id)] = member


def _is_attachment(value: Any) -> bool:
    return isinstance(value, FakeAttachment) or infer_option_type(value) == OPT_ATTACHMENT


def _is_nested(spec: JSON | None, value: Any) -> bool:
    """Whether a mapping-form ``value`` holds a subcommand's or group's options rather than a value."""
    if not isinstance(value, Mapping):
        return False
    if spec is not None:
        return int(spec["type"]) in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP)
    return not _is_attachment(value)


def _option_type(spec: JSON | None, opt: JSON) -> int:
    """An option's type: the registered schema's, else guessed (a group holds only subcommands)."""
    if spec is not None:
        return int(spec["type"])
    if "options" in opt:
        inner = opt["options"]
        if isinstance(inner, Mapping):
            items = [_is_nested(None, v) for v in inner.values()]
        else:
            items = ["options" in o for o in inner]
        return OPT_SUB_COMMAND_GROUP if items and all(items) else OPT_SUB_COMMAND
    value = opt.get("value")
    if isinstance(value, FakeChannel):
        return OPT_CHANNEL
    if isinstance(value, FakeRole):
        return OPT_ROLE
    if isinstance(value, FakeAttachment):
        return OPT_ATTACHMENT
    return infer_option_type(value)


def _invoker_permissions(payload: JSON) -> int | None:
    """The invoking member's permissions in an interaction payload (None in a DM)."""
    member = payload.get("member")
    return None if member is None else int(member["permissions"])


def _guild_of(message_payload: JSON) -> int | None:
    gid = message_payload.get("guild_id")
    return None if gid is None else int(gid)


def _fill_modal_component(comp: JSON, values: Mapping[str, Any], resolved: JSON, counter: Iterator[int]) -> JSON:
    """A submitted component mirroring the modal's component ``comp``."""
    ctype = int(comp["type"])
    cid = comp.get("id") or next(counter)
    if ctype == 1:
        return {
            "type": 1,
            "id": cid,
            "components": [_fill_modal_component(c, values, resolved, counter) for c in comp.get("components", [])],
        }
    if ctype == 18:
        return {"type": 18, "id": cid, "component": _fill_modal_component(comp["component"], values, resolved, counter)}
    custom_id = comp.get("custom_id")
    if custom_id is None:
        return {"type": ctype, "id": cid}
    value = values.get(custom_id)
    out: JSON = {"type": ctype, "id": cid, "custom_id": custom_id}
    if ctype == 4:
        out["value"] = str(value) if value is not None else str(comp.get("value") or "")
    elif ctype == 19:
        ids: list[str] = []
        for att in value or []:
            payload = att.to_payload() if isinstance(att, FakeAttachment) else att
            ids.append(str(payload["id"]))
            resolved.setdefault("attachments", {})[str(payload["id"])] = payload
        out["values"] = ids
    elif ctype in (3, 5, 6, 7, 8, 22):
        out["values"] = [str(v) for v in (value or [])]
    elif ctype == 21:
        out["value"] = value
    elif ctype == 23:
        out["value"] = bool(value)
    return out
