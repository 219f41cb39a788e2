"""REST, CDN, interaction-callback and webhook handlers of the fake Discord."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from aiohttp import web

from .discord_models import (
    CommandSync,
    FakeChannel,
    FakeGuild,
    FakeMessage,
    InteractionRecord,
    RecordedFile,
    RecordedRequest,
)
from .discord_payloads import (
    CALLBACK_AUTOCOMPLETE,
    CALLBACK_DEFERRED_MESSAGE,
    CALLBACK_DEFERRED_UPDATE,
    CALLBACK_MESSAGE,
    CALLBACK_MODAL,
    CALLBACK_UPDATE_MESSAGE,
    FLAG_EPHEMERAL,
    FLAG_LOADING,
    INTERACTION_APPLICATION_COMMAND,
    INTERACTION_AUTOCOMPLETE,
    INTERACTION_COMPONENT,
    INTERACTION_MODAL_SUBMIT,
    INTERACTION_TOKEN_TTL_S,
    JSON,
    MESSAGE_CHAT_INPUT_COMMAND,
    MESSAGE_DEFAULT,
    SETTABLE_MESSAGE_FLAGS,
)
from .discord_rest import (
    ApiError,
    Reply,
    Router,
    form_error,
    invalid_webhook_token,
    missing_access,
    missing_permissions,
    unknown_channel,
    unknown_interaction,
    unknown_message,
    validate_commands,
    validate_message_body,
)
from .discord_state import FakeState


class RestHandlers(FakeState):
    """Route table and handlers; each takes the recorded request and returns a :class:`Reply`."""

    _router: Router

    def _register_routes(self) -> None:
        add = self._router.add
        add("GET", "/users/@me", self._get_me)
        add("GET", "/users/{user_id}", self._get_user)
        add("POST", "/users/@me/channels", self._create_dm)
        add("GET", "/oauth2/applications/@me", self._get_application)
        add("GET", "/applications/@me", self._get_application)
        add("GET", "/gateway", self._get_gateway, auth=False)
        add("GET", "/gateway/bot", self._get_gateway_bot)
        for scope in ("/applications/{application_id}", "/applications/{application_id}/guilds/{guild_id}"):
            add("GET", scope + "/commands", self._get_commands)
            add("PUT", scope + "/commands", self._put_commands)
            add("POST", scope + "/commands", self._post_command)
            add("GET", scope + "/commands/{command_id}", self._get_command)
            add("PATCH", scope + "/commands/{command_id}", self._patch_command)
            add("DELETE", scope + "/commands/{command_id}", self._delete_command)
        add("GET", "/channels/{channel_id}", self._get_channel)
        add("GET", "/channels/{channel_id}/messages", self._get_messages)
        add("POST", "/channels/{channel_id}/messages", self._post_message)
        add("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        add("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        add("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_channel_message)
        add("POST", "/channels/{channel_id}/typing", self._typing)
        add("GET", "/guilds/{guild_id}", self._get_guild)
        add("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        add("GET", "/guilds/{guild_id}/roles", self._get_guild_roles)
        add("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)
        add("POST", "/attachments/refresh-urls", self._refresh_urls)
        add("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._callback, auth=False)
        add("POST", "/webhooks/{application_id}/{webhook_token}", self._followup, auth=False)
        for method, handler in (
            ("GET", self._get_webhook_message),
            ("PATCH", self._patch_webhook_message),
            ("DELETE", self._delete_webhook_message),
        ):
            add(method, "/webhooks/{application_id}/{webhook_token}/messages/{message_id}", handler, auth=False)

    # -----------------------------------------------------------------------------------------------------------
    # Users, application, gateway
    # -----------------------------------------------------------------------------------------------------------

    async def _get_me(self, rec: RecordedRequest) -> Reply:
        return Reply(200, self._bot_user_payload())

    async def _get_user(self, rec: RecordedRequest) -> Reply:
        user = self.users.get(_int(rec.params["user_id"]))
        if user is None:
            raise ApiError(404, 10013, "Unknown User")
        return Reply(200, user.to_payload())

    async def _create_dm(self, rec: RecordedRequest) -> Reply:
        recipient = _int((rec.json or {}).get("recipient_id"))
        if recipient not in self.users or recipient == self.bot_user_id:
            raise form_error(["recipient_id"], "INVALID_RECIPIENT", "Invalid Recipient(s)")
        return Reply(200, self._channel_payload(self.channels[self.dm_channel_id(recipient)]))

    async def _get_application(self, rec: RecordedRequest) -> Reply:
        return Reply(
            200,
            {
                "id": str(self.application_id),
                "name": self.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "type": None,
                "hook": True,
                "bot_public": True,
                "bot_require_code_grant": False,
                "verify_key": hashlib.sha256(self._secret).hexdigest(),
                "flags": 0,
                "owner": self.users[self.owner_id].to_payload(),
                "team": None,
                "bot": self.bot_user.to_payload(),
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "approximate_guild_count": len(self.guilds),
                "integration_types_config": {"0": {}, "1": {}},
                "tags": [],
            },
        )

    async def _get_gateway(self, rec: RecordedRequest) -> Reply:
        return Reply(200, {"url": self.gateway_url})

    async def _get_gateway_bot(self, rec: RecordedRequest) -> Reply:
        return Reply(
            200,
            {
                "url": self.gateway_url,
                "shards": self.gateway.shard_count,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 14_400_000,
                    "max_concurrency": 1,
                },
            },
        )

    # -----------------------------------------------------------------------------------------------------------
    # Application commands
    # -----------------------------------------------------------------------------------------------------------

    def _command_scope(self, rec: RecordedRequest) -> int | None:
        if _int(rec.params["application_id"]) != self.application_id:
            raise missing_access()
        guild_id = rec.params.get("guild_id")
        if guild_id is None:
            return None
        gid = _int(guild_id)
        if gid not in self.guilds:
            raise missing_access()
        return gid

    def _normalise_command(self, body: JSON, guild_id: int | None, existing: JSON | None) -> JSON:
        """The command object Discord stores and returns for ``body``: ``default_member_permissions`` as a string
        of bits (or null; not enforced on interactions: Discord only hides the command in the client, and a
        guild's command-permission overrides may show it to anyone), ``contexts`` as given (null when not given),
        ``dm_permission`` on global commands only (null or absent means true)."""
        ctype = int(body.get("type") or 1)
        permissions = body.get("default_member_permissions")
        cmd: JSON = {
            "id": existing["id"] if existing else str(self._ids.next()),
            "application_id": str(self.application_id),
            "version": str(self._ids.next()),
            "default_member_permissions": None if permissions is None else str(int(permissions)),
            "type": ctype,
            "name": body["name"],
            "name_localizations": body.get("name_localizations"),
            "description": body.get("description", "") if ctype == 1 else "",
            "description_localizations": body.get("description_localizations"),
            "contexts": body.get("contexts"),
            "integration_types": body.get("integration_types") or [0],
            "nsfw": bool(body.get("nsfw", False)),
        }
        if guild_id is None:
            dm_permission = body.get("dm_permission")
            cmd["dm_permission"] = True if dm_permission is None else bool(dm_permission)
        if body.get("options"):
            cmd["options"] = body["options"]
        if guild_id is not None:
            cmd["guild_id"] = str(guild_id)
        return cmd

    async def _get_commands(self, rec: RecordedRequest) -> Reply:
        return Reply(200, self.commands(self._command_scope(rec)))

    async def _put_commands(self, rec: RecordedRequest) -> Reply:
        guild_id = self._command_scope(rec)
        validate_commands(rec.json)
        old = {(c["name"], c["type"]): c for c in self._commands.get(guild_id, {}).values()}
        new: dict[int, JSON] = {}
        for body in rec.json:
            cmd = self._normalise_command(body, guild_id, old.get((body["name"], int(body.get("type") or 1))))
            new[int(cmd["id"])] = cmd
        self._commands[guild_id] = new
        self.command_syncs.append(CommandSync(guild_id=guild_id, commands=list(new.values()), time=rec.time))
        return Reply(200, list(new.values()))

    async def _post_command(self, rec: RecordedRequest) -> Reply:
        guild_id = self._command_scope(rec)
        validate_commands([rec.json])
        scope = self._commands.setdefault(guild_id, {})
        key = (rec.json["name"], int(rec.json.get("type") or 1))
        existing = next((c for c in scope.values() if (c["name"], c["type"]) == key), None)
        cmd = self._normalise_command(rec.json, guild_id, existing)
        scope[int(cmd["id"])] = cmd
        return Reply(200 if existing else 201, cmd)

    def _command(self, rec: RecordedRequest) -> tuple[int | None, JSON]:
        guild_id = self._command_scope(rec)
        cmd = self._commands.get(guild_id, {}).get(_int(rec.params["command_id"]))
        if cmd is None:
            raise ApiError(404, 10063, "Unknown application command")
        return guild_id, cmd

    async def _get_command(self, rec: RecordedRequest) -> Reply:
        return Reply(200, self._command(rec)[1])

    async def _patch_command(self, rec: RecordedRequest) -> Reply:
        guild_id, cmd = self._command(rec)
        merged = self._normalise_command({**cmd, **(rec.json or {})}, guild_id, cmd)
        self._commands[guild_id][int(cmd["id"])] = merged
        return Reply(200, merged)

    async def _delete_command(self, rec: RecordedRequest) -> Reply:
        guild_id, cmd = self._command(rec)
        del self._commands[guild_id][int(cmd["id"])]
        return Reply(204)

    # -----------------------------------------------------------------------------------------------------------
    # Channels and messages
    # -----------------------------------------------------------------------------------------------------------

    def _channel(self, rec: RecordedRequest) -> FakeChannel:
        channel = self.channels.get(_int(rec.params["channel_id"]))
        if channel is None:
            raise unknown_channel()
        if channel.guild_id in self.left_guilds:
            raise missing_access()  # the channel exists; the bot is no longer in its guild
        return channel

    def _check_can_write(self, channel: FakeChannel) -> None:
        if channel.is_dm:
            assert channel.recipient_id is not None
            if not self.users[channel.recipient_id].dms_open:
                raise ApiError(403, 50007, "Cannot send messages to this user")
            return
        code = self._denied_channels.get(channel.id)
        if code == 50001:
            raise missing_access()
        if code is not None or not channel.bot_can_send:
            raise missing_permissions()

    def _channel_message(self, rec: RecordedRequest) -> FakeMessage:
        channel = self._channel(rec)
        msg = self._messages_by_id.get(_int(rec.params["message_id"]))
        if msg is None or msg.channel_id != channel.id or msg.deleted or msg.ephemeral:
            raise unknown_message()
        return msg

    async def _get_channel(self, rec: RecordedRequest) -> Reply:
        channel = self._channel(rec)
        if self._denied_channels.get(channel.id) == 50001:
            raise missing_access()
        return Reply(200, self._channel_payload(channel))

    async def _get_messages(self, rec: RecordedRequest) -> Reply:
        channel = self._channel(rec)
        limit = max(1, min(100, int(rec.query.get("limit", "50"))))
        msgs = self.channel_messages(channel.id, include_ephemeral=False)
        before, after = rec.query.get("before"), rec.query.get("after")
        if before:
            msgs = [m for m in msgs if m.id < int(before)]
        if after:
            msgs = [m for m in msgs if m.id > int(after)]
        newest_first = sorted(msgs, key=lambda m: m.id, reverse=True)[:limit]
        return Reply(200, [self.message_payload(m) for m in newest_first])

    async def _post_message(self, rec: RecordedRequest) -> Reply:
        channel = self._channel(rec)
        self._check_can_write(channel)
        body = rec.json if isinstance(rec.json, dict) else {}
        validate_message_body(body, rec.files, creating=True, current_flags=0, size_limit=self.attachment_size_limit)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            # Discord: with enforce_nonce, a repeated nonce from the same author within a few
            # minutes returns the existing message instead of creating a second one.
            for existing in self.messages.get(channel.id, []):
                if existing.nonce == nonce and not existing.deleted and existing.webhook_id is None:
                    return Reply(200, self.message_payload(existing))
        msg = FakeMessage(
            id=self._ids.next(),
            channel_id=channel.id,
            guild_id=channel.guild_id,
            author=self.bot_user.to_payload(),
            flags=int(body.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS & ~FLAG_EPHEMERAL,
            tts=bool(body.get("tts", False)),
            nonce=body.get("nonce"),
            message_reference=body.get("message_reference"),
            poll=body.get("poll"),
        )
        self._fill_message(msg, body, rec.files, creating=True)
        self._store_message(msg)
        payload = self.message_payload(msg)
        self._echo("MESSAGE_CREATE", msg)
        return Reply(200, payload)

    async def _get_message(self, rec: RecordedRequest) -> Reply:
        return Reply(200, self.message_payload(self._channel_message(rec)))

    async def _patch_message(self, rec: RecordedRequest) -> Reply:
        msg = self._channel_message(rec)
        channel = self.channels[msg.channel_id]
        if int(msg.author["id"]) != self.bot_user_id:
            body = rec.json or {}
            if set(body) - {"flags"}:
                raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        if self._denied_channels.get(channel.id) == 50001:
            raise missing_access()
        self._edit_message(msg, rec.json or {}, rec.files)
        self._echo("MESSAGE_UPDATE", msg)
        return Reply(200, self.message_payload(msg))

    async def _delete_channel_message(self, rec: RecordedRequest) -> Reply:
        msg = self._channel_message(rec)
        msg.deleted = True
        self._echo("MESSAGE_DELETE", msg)
        return Reply(204)

    async def _typing(self, rec: RecordedRequest) -> Reply:
        self._channel(rec)
        return Reply(204)

    # -----------------------------------------------------------------------------------------------------------
    # Guilds and attachments
    # -----------------------------------------------------------------------------------------------------------

    def _guild(self, rec: RecordedRequest) -> FakeGuild:
        guild_id = _int(rec.params["guild_id"])
        guild = self.guilds.get(guild_id)
        if guild_id in self.left_guilds:
            raise missing_access()
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def _get_guild(self, rec: RecordedRequest) -> Reply:
        guild = self._guild(rec)
        payload = self._guild_payload(guild)
        if rec.query.get("with_counts") in ("true", "1"):
            payload.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return Reply(200, payload)

    async def _get_guild_channels(self, rec: RecordedRequest) -> Reply:
        return Reply(200, [self._channel_payload(c) for c in self._guild(rec).channels.values()])

    async def _get_guild_roles(self, rec: RecordedRequest) -> Reply:
        return Reply(200, [r.to_payload() for r in self._guild(rec).roles.values()])

    async def _get_member(self, rec: RecordedRequest) -> Reply:
        guild = self._guild(rec)
        uid = _int(rec.params["user_id"])
        member = guild.members.get(uid)
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return Reply(200, guild.member_to_payload(member, self.users[uid]))

    async def _refresh_urls(self, rec: RecordedRequest) -> Reply:
        urls = (rec.json or {}).get("attachment_urls")
        if not isinstance(urls, list) or not 1 <= len(urls) <= 50:
            raise form_error(["attachment_urls"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 50 in length.")
        refreshed: list[JSON] = []
        for url in urls:
            att = self.attachment_for_url(str(url))
            if att is None:
                refreshed.append({"original": url, "refreshed": url})
                continue
            self._sign(att)  # older signatures stay valid until they expire
            prefix = "/media" if "/media/" in str(url) else "/cdn"
            refreshed.append({"original": url, "refreshed": f"{self.url}{prefix}{att.cdn_path}?{att.query}"})
        return Reply(200, {"refreshed_urls": refreshed})

    async def _serve_cdn(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        prefix = "/cdn" if request.path.startswith("/cdn/") else "/media"
        att = self._attachments_by_path.get(request.path[len(prefix) :])
        signature = self._valid_signatures.get(request.query.get("hm", ""))
        gone = (
            att is None
            or signature is None
            or signature[0] != att.id
            or signature[1] < time.time()
            or (att.message_id is not None and self._messages_by_id[att.message_id].deleted)
        )
        if gone or att is None:
            rec.status = 404
            return web.Response(status=404, text="This content is no longer available.")
        att.downloads += 1
        rec.status = 200
        headers = {"Content-Type": att.content_type or "application/octet-stream", "Cache-Control": "public"}
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Content-Length": str(att.size)})
        return web.Response(status=200, body=att.data, headers=headers)

    # -----------------------------------------------------------------------------------------------------------
    # Interaction callback and webhook endpoints
    # -----------------------------------------------------------------------------------------------------------

    def _interaction_message(self, rec: InteractionRecord, *, flags: int) -> FakeMessage:
        payload = rec.payload
        user = payload.get("member", {}).get("user") or payload.get("user")
        is_command = rec.type == INTERACTION_APPLICATION_COMMAND
        return FakeMessage(
            id=self._ids.next(),
            channel_id=int(payload["channel_id"]),
            guild_id=_int(payload["guild_id"]) if payload.get("guild_id") else None,
            author=self.bot_user.to_payload(),
            flags=flags,
            type=MESSAGE_CHAT_INPUT_COMMAND if is_command else MESSAGE_DEFAULT,
            webhook_id=self.application_id,
            application_id=self.application_id,
            interaction_id=rec.id,
            interaction_metadata={
                "id": str(rec.id),
                "type": rec.type,
                "user": user,
                "authorizing_integration_owners": payload.get("authorizing_integration_owners", {}),
            },
        )

    def _source_message(self, rec: InteractionRecord) -> FakeMessage:
        """The message a component/modal interaction came from (registered if the fake did not create it)."""
        data = rec.payload.get("message")
        if data is None:
            raise ApiError(400, 40032, "This interaction has no message to update")
        msg = self._messages_by_id.get(int(data["id"]))
        if msg is None:
            msg = FakeMessage(
                id=int(data["id"]),
                channel_id=int(data["channel_id"]),
                guild_id=_int(data["guild_id"]) if data.get("guild_id") else None,
                author=data.get("author") or self.bot_user.to_payload(),
                content=data.get("content", ""),
                embeds=list(data.get("embeds") or []),
                components=list(data.get("components") or []),
                flags=int(data.get("flags") or 0),
            )
            self._store_message(msg)
        return msg

    def _check_callback_type(self, rec: InteractionRecord, ctype: int) -> None:
        allowed = {
            INTERACTION_APPLICATION_COMMAND: {CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE, CALLBACK_MODAL, 12},
            INTERACTION_COMPONENT: {
                CALLBACK_MESSAGE,
                CALLBACK_DEFERRED_MESSAGE,
                CALLBACK_DEFERRED_UPDATE,
                CALLBACK_UPDATE_MESSAGE,
                CALLBACK_MODAL,
            },
            INTERACTION_AUTOCOMPLETE: {CALLBACK_AUTOCOMPLETE},
            INTERACTION_MODAL_SUBMIT: {
                CALLBACK_MESSAGE,
                CALLBACK_DEFERRED_MESSAGE,
                CALLBACK_DEFERRED_UPDATE,
                CALLBACK_UPDATE_MESSAGE,
            },
        }.get(rec.type, set())
        if ctype not in allowed:
            raise form_error(["type"], "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid")

    async def _callback(self, rec_req: RecordedRequest) -> Reply:
        rec = self.interactions.get(_int(rec_req.params["interaction_id"]))
        if rec is None or rec.token != rec_req.params["interaction_token"]:
            raise unknown_interaction()
        body = rec_req.json if isinstance(rec_req.json, dict) else {}
        now = asyncio.get_running_loop().time()
        try:
            if rec.token_expired:
                raise unknown_interaction()
            if rec.callback is not None:
                raise ApiError(400, 40060, "Interaction has already been acknowledged.")
            if self.interaction_deadline is not None and now - rec.created_at > self.interaction_deadline:
                raise unknown_interaction()
            ctype = int(body.get("type") or 0)
            self._check_callback_type(rec, ctype)
            data = body.get("data") or {}
            self._validate_callback_data(ctype, data, rec_req.files)
        except ApiError as exc:
            rec.rejected_callbacks.append(
                {"status": exc.status, "error": exc.body, "latency": now - rec.created_at, "body": body}
            )
            raise

        rec.callback = body
        rec.callback_files = list(rec_req.files)
        rec.callback_at = now
        flags = int(data.get("flags") or 0)
        info: JSON = {"id": str(rec.id), "type": rec.type}
        resource: JSON | None = None
        if ctype in (CALLBACK_MESSAGE, CALLBACK_DEFERRED_MESSAGE):
            loading = FLAG_LOADING if ctype == CALLBACK_DEFERRED_MESSAGE else 0
            msg = self._interaction_message(rec, flags=(flags & SETTABLE_MESSAGE_FLAGS) | loading)
            if ctype == CALLBACK_MESSAGE:
                self._fill_message(msg, data, rec_req.files, creating=True)
            self._store_message(msg)
            rec.original = msg
            info.update(
                response_message_id=str(msg.id),
                response_message_loading=bool(loading),
                response_message_ephemeral=msg.ephemeral,
            )
            if ctype == CALLBACK_MESSAGE:
                resource = {"type": ctype, "message": self.message_payload(msg)}
            if not msg.ephemeral:
                self._echo("MESSAGE_CREATE", msg)
        elif ctype in (CALLBACK_DEFERRED_UPDATE, CALLBACK_UPDATE_MESSAGE):
            msg = self._source_message(rec)
            rec.original = msg
            if ctype == CALLBACK_UPDATE_MESSAGE:
                self._edit_message(msg, data, rec_req.files)
                resource = {"type": ctype, "message": self.message_payload(msg)}
                self._echo("MESSAGE_UPDATE", msg)
            info.update(response_message_id=str(msg.id), response_message_ephemeral=msg.ephemeral)
        self._notifier.notify()
        if rec_req.query.get("with_response") not in ("1", "true", "True") or ctype == CALLBACK_AUTOCOMPLETE:
            return Reply(204)
        out: JSON = {"interaction": info}
        if resource is not None:
            out["resource"] = resource
        return Reply(200, out)

    def _validate_callback_data(self, ctype: int, data: JSON, files: list[RecordedFile]) -> None:
        if ctype == CALLBACK_MESSAGE:
            validate_message_body(data, files, creating=True, current_flags=0, size_limit=self.attachment_size_limit)
        elif ctype == CALLBACK_UPDATE_MESSAGE:
            validate_message_body(data, files, creating=False, current_flags=0, size_limit=self.attachment_size_limit)
        elif ctype == CALLBACK_AUTOCOMPLETE:
            choices = data.get("choices")
            if not isinstance(choices, list) or len(choices) > 25:
                raise form_error(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
            for index, choice in enumerate(choices):
                if not 1 <= len(str(choice.get("name", ""))) <= 100:
                    raise form_error(
                        ["data", "choices", index, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100."
                    )
        elif ctype == CALLBACK_MODAL:
            if not 1 <= len(str(data.get("title") or "")) <= 45:
                raise form_error(["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45 in length.")
            if not 1 <= len(str(data.get("custom_id") or "")) <= 100:
                raise form_error(["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100.")
            if not 1 <= len(data.get("components") or []) <= 5:
                raise form_error(["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5.")

    def _webhook_interaction(self, rec_req: RecordedRequest) -> InteractionRecord:
        if _int(rec_req.params["application_id"]) != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        rec = self._interactions_by_token.get(rec_req.params["webhook_token"])
        if rec is None or rec.token_expired:
            raise invalid_webhook_token()
        if asyncio.get_running_loop().time() - rec.created_at > INTERACTION_TOKEN_TTL_S:
            raise invalid_webhook_token()
        return rec

    def _webhook_message(self, rec_req: RecordedRequest) -> tuple[InteractionRecord, FakeMessage]:
        rec = self._webhook_interaction(rec_req)
        message_id = rec_req.params["message_id"]
        if message_id == "@original":
            msg = rec.original
        else:
            mid = _int(message_id)
            msg = next((m for m in rec.messages if m.id == mid), None)
        if msg is None or msg.deleted:
            raise unknown_message()
        return rec, msg

    async def _followup(self, rec_req: RecordedRequest) -> Reply:
        rec = self._webhook_interaction(rec_req)
        if rec.callback is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = rec_req.json if isinstance(rec_req.json, dict) else {}
        original = rec.original
        if original is not None and original.loading and not original.deleted:
            # Discord: the first followup after a deferred (type 5) response edits the loading message.
            self._edit_message(original, body, rec_req.files)
            msg = original
        else:
            validate_message_body(
                body, rec_req.files, creating=True, current_flags=0, size_limit=self.attachment_size_limit
            )
            msg = self._interaction_message(rec, flags=int(body.get("flags") or 0) & SETTABLE_MESSAGE_FLAGS)
            msg.type = MESSAGE_DEFAULT
            msg.tts = bool(body.get("tts", False))
            self._fill_message(msg, body, rec_req.files, creating=True)
            self._store_message(msg)
            self._echo("MESSAGE_CREATE", msg)
        rec.followups.append(msg)
        self._notifier.notify()
        if rec_req.query.get("wait") in ("1", "true", "True"):
            return Reply(200, self.message_payload(msg))
        return Reply(204)

    async def _get_webhook_message(self, rec_req: RecordedRequest) -> Reply:
        return Reply(200, self.message_payload(self._webhook_message(rec_req)[1]))

    async def _patch_webhook_message(self, rec_req: RecordedRequest) -> Reply:
        _, msg = self._webhook_message(rec_req)
        self._edit_message(msg, rec_req.json if isinstance(rec_req.json, dict) else {}, rec_req.files)
        self._echo("MESSAGE_UPDATE", msg)
        return Reply(200, self.message_payload(msg))

    async def _delete_webhook_message(self, rec_req: RecordedRequest) -> Reply:
        _, msg = self._webhook_message(rec_req)
        msg.deleted = True
        self._echo("MESSAGE_DELETE", msg)
        self._notifier.notify()
        return Reply(204)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, 50035, "Invalid Form Body", {"_errors": [{"code": "NUMBER_TYPE_COERCE"}]}) from None
