"""What the demo shows: messages of the Discord stand-in, as plain text and as an HTML page.

A `Shot` is one message as it stood at one moment (messages are edited in place, so the card is
shot several times). Discord's markup is rendered the way a reader sees it: `<@id>` becomes the
member's name, `<t:unix:R>` a time, bold and code lose their marks in plain text and become tags
in HTML. Pictures are kept as bytes, and the HTML page embeds them as data: URIs, so the page is
one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from PIL import Image

from bot.discord_standin import FakeAttachment, FakeDiscord, FakeMessage

JSON = dict[str, Any]

_BUTTON_STYLES = {1: "primary", 2: "secondary", 3: "success", 4: "danger", 5: "link", 6: "premium"}
_INLINE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|<@!?(?P<user>\d+)>"
    r"|<#(?P<channel>\d+)>"
    r"|<t:(?P<ts>-?\d+)(?::(?P<style>[tTdDfFR]))?>"
    r"|\*\*(?P<bold>.+?)\*\*"
    r"|(?<![\w*])\*(?P<em>[^*\n]+?)\*(?![\w*])"
    r"|(?P<url>https?://[^\s<>()]+)"
)


@dataclass(frozen=True)
class Picture:
    """An attachment's bytes, as they were when the message was shot."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)
    width: int | None
    height: int | None

    @property
    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{base64.b64encode(self.data).decode('ascii')}"

    def describe(self) -> str:
        size = f"{self.width}x{self.height}, " if self.width and self.height else ""
        return f"{self.filename} ({size}{_kib(len(self.data))})"


@dataclass(frozen=True)
class Shot:
    """One message at one moment: what a member would see."""

    heading: str
    where: str
    author: str
    ephemeral: bool
    edited: bool
    at: datetime
    content: str
    embeds: tuple[JSON, ...]
    buttons: tuple[tuple[JSON, ...], ...]
    attachments: tuple[Picture, ...]
    embed_pictures: Mapping[str, Picture]  # an embed image URL -> the attachment it shows
    show_pictures: bool = True  # False: the HTML names the attachments instead of repeating them


@dataclass(frozen=True)
class Names:
    """How mentions read: user and channel names by id."""

    users: Mapping[int, str]
    channels: Mapping[int, str]

    @classmethod
    def of(cls, fake: FakeDiscord) -> Names:
        return cls(
            users={uid: user.username for uid, user in fake.users.items()},
            channels={cid: ch.name for cid, ch in fake.channels.items() if ch.name},
        )


# -- shooting ---------------------------------------------------------------------------------------


def _picture(attachment: FakeAttachment) -> Picture:
    width, height = attachment.width, attachment.height
    content_type = attachment.content_type or "application/octet-stream"
    if content_type.startswith("image/") and (width is None or height is None):
        try:
            with Image.open(io.BytesIO(attachment.data)) as img:
                width, height = img.size
        except (OSError, ValueError):
            width = height = None
    return Picture(attachment.filename, content_type, attachment.data, width, height)


def shoot(fake: FakeDiscord, message: FakeMessage, heading: str, *, show_pictures: bool = True) -> Shot:
    """The message as it stands now."""
    channel = fake.channels.get(message.channel_id)
    if channel is not None and channel.is_dm:
        recipient = fake.users.get(channel.recipient_id or 0)
        where = f"DM with {recipient.username if recipient else 'a member'}"
    else:
        where = f"#{channel.name}" if channel is not None and channel.name else f"channel {message.channel_id}"
    pictures = {a.id: _picture(a) for a in message.attachments}
    embed_pictures: dict[str, Picture] = {}
    for embed in message.embeds:
        for key in ("image", "thumbnail"):
            media = embed.get(key) or {}
            url = media.get("url")
            if not isinstance(url, str):
                continue
            found = fake.attachment_for_url(url)
            if found is not None:
                embed_pictures[url] = pictures.get(found.id) or _picture(found)
    rows = tuple(
        tuple(c for c in row.get("components", []) if c.get("type") == 2)
        for row in message.components
        if row.get("type") == 1
    )
    author = message.author.get("global_name") or message.author.get("username") or "?"
    return Shot(
        heading=heading,
        where=where,
        author=str(author),
        ephemeral=message.ephemeral,
        edited=message.edited_at is not None,
        at=datetime.now(UTC),
        content=message.content,
        embeds=tuple(dict(e) for e in message.embeds),
        buttons=tuple(r for r in rows if r),
        attachments=tuple(pictures[a.id] for a in message.attachments),
        embed_pictures=embed_pictures,
        show_pictures=show_pictures,
    )


# -- Discord markup ---------------------------------------------------------------------------------


def _kib(size: int) -> str:
    return f"{size / 1024:.0f} KB" if size >= 1024 else f"{size} B"


def relative(seconds: float) -> str:
    """Discord's relative time: "in 10 minutes", "3 seconds ago"."""
    amount = abs(seconds)
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if amount >= length or unit == "second":
            count = round(amount / length)
            text = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {text}" if seconds > 0 else f"{text} ago"
    raise AssertionError("unreachable")


def timestamp_text(unix: int, style: str | None, now: datetime) -> str:
    """`<t:unix:style>` as a reader sees it, in this machine's time zone."""
    moment = datetime.fromtimestamp(unix, UTC).astimezone()
    if style == "R":
        return relative((moment - now).total_seconds())
    formats = {
        "t": "%H:%M",
        "T": "%H:%M:%S",
        "d": "%d/%m/%Y",
        "D": "%d %B %Y",
        "F": "%A, %d %B %Y %H:%M",
    }
    return moment.strftime(formats.get(style or "f", "%d %B %Y %H:%M"))


def _render(text: str, names: Names, now: datetime, *, as_html: bool) -> str:
    escape: Callable[[str], str] = html.escape if as_html else str

    def replace(match: re.Match[str]) -> str:
        groups = match.groupdict()
        if groups["code"] is not None:
            return f"<code>{escape(groups['code'])}</code>" if as_html else groups["code"]
        if groups["user"] is not None:
            name = "@" + names.users.get(int(groups["user"]), "unknown-user")
            return f'<span class="mention">{escape(name)}</span>' if as_html else name
        if groups["channel"] is not None:
            name = "#" + names.channels.get(int(groups["channel"]), "unknown")
            return f'<span class="mention">{escape(name)}</span>' if as_html else name
        if groups["ts"] is not None:
            shown = timestamp_text(int(groups["ts"]), groups["style"], now)
            return f'<span class="time">{escape(shown)}</span>' if as_html else shown
        if groups["bold"] is not None:
            inner = _render(groups["bold"], names, now, as_html=as_html)
            return f"<strong>{inner}</strong>" if as_html else inner
        if groups["em"] is not None:
            inner = _render(groups["em"], names, now, as_html=as_html)
            return f"<em>{inner}</em>" if as_html else inner
        url = groups["url"]
        return f'<a href="{escape(url)}">{escape(url)}</a>' if as_html else url

    out: list[str] = []
    last = 0
    for match in _INLINE.finditer(text):
        out.append(escape(text[last : match.start()]))
        out.append(replace(match))
        last = match.end()
    out.append(escape(text[last:]))
    rendered = "".join(out)
    return rendered.replace("\n", "<br>\n") if as_html else rendered


def plain(text: str, names: Names, now: datetime) -> str:
    return _render(text, names, now, as_html=False)


def rich(text: str, names: Names, now: datetime) -> str:
    return _render(text, names, now, as_html=True)


def button_label(button: JSON) -> str:
    label = str(button.get("label") or (button.get("emoji") or {}).get("name") or "?")
    if button.get("style") == 5 and button.get("url"):
        label += f" -> {button['url']}"
    return label + (" (disabled)" if button.get("disabled") else "")


# -- plain text -------------------------------------------------------------------------------------


def _indent(text: str, prefix: str) -> list[str]:
    return [prefix + line if line else prefix.rstrip() for line in text.splitlines() or [""]]


def _embed_lines(embed: JSON, shot: Shot, names: Names) -> list[str]:
    bar = "  | "
    lines: list[str] = []
    if embed.get("title"):
        lines += _indent(plain(str(embed["title"]), names, shot.at), bar)
    if embed.get("description"):
        lines += _indent(plain(str(embed["description"]), names, shot.at), bar)
    row: list[str] = []  # inline fields sit side by side, three to a row, as in Discord
    for fld in embed.get("fields", []):
        name = plain(str(fld.get("name", "")), names, shot.at)
        value = plain(str(fld.get("value", "")), names, shot.at)
        if fld.get("inline") and "\n" not in value:
            row.append(f"{name}: {value}")
            if len(row) == 3:
                lines.append(bar + "   ".join(row))
                row = []
            continue
        if row:
            lines.append(bar + "   ".join(row))
            row = []
        if "\n" in value:
            lines += [f"{bar}{name}:", *_indent(value, bar + "    ")]
        else:
            lines.append(f"{bar}{name}: {value}")
    if row:
        lines.append(bar + "   ".join(row))
    for key in ("image", "thumbnail"):
        url = (embed.get(key) or {}).get("url")
        if isinstance(url, str):
            picture = shot.embed_pictures.get(url)
            lines.append(f"{bar}[{key}: {picture.describe() if picture else url}]")
    footer = (embed.get("footer") or {}).get("text")
    if footer:
        lines += _indent(plain(str(footer), names, shot.at), bar)
    return lines


def shot_text(shot: Shot, names: Names) -> str:
    """A message as plain text, the way Discord lays it out."""
    time = shot.at.astimezone().strftime("%H:%M:%S")
    header = f"{shot.author} [APP]  {shot.where}  {time}"
    if shot.edited:
        header += "  (edited)"
    if shot.ephemeral:
        header += "  (only you can see this)"
    lines = [f"--- {shot.heading} ".ljust(78, "-"), header]
    if shot.content:
        lines += _indent(plain(shot.content, names, shot.at), "  ")
    for embed in shot.embeds:
        lines += _embed_lines(embed, shot, names)
    shown_in_embeds = {id(p) for p in shot.embed_pictures.values()}
    loose = [p for p in shot.attachments if id(p) not in shown_in_embeds]
    if loose:
        lines.append(f"  {len(loose)} attachment{'' if len(loose) == 1 else 's'}:")
        lines += [f"    - {p.describe()}" for p in loose]
    for row in shot.buttons:
        lines.append("  " + "  ".join(f"[ {button_label(b)} ]" for b in row))
    return "\n".join(lines)


def status_of(shot: Shot, names: Names) -> str:
    """The first embed's description (the card's state), as plain text."""
    if not shot.embeds:
        return plain(shot.content, names, shot.at).splitlines()[0] if shot.content else ""
    return plain(str(shot.embeds[0].get("description", "")), names, shot.at)


def changes_text(before: Shot, after: Shot, names: Names) -> str:
    """What an edit changed: the state, and each embed field that is new or different."""

    def fields(shot: Shot) -> dict[str, str]:
        if not shot.embeds:
            return {}
        return {str(f.get("name")): str(f.get("value", "")) for f in shot.embeds[0].get("fields", [])}

    old, new = fields(before), fields(after)
    time = after.at.astimezone().strftime("%H:%M:%S")
    lines = [f"--- {after.heading} ".ljust(78, "-"), f"{after.author} [APP]  {after.where}  {time}  (edited)"]
    lines.append(f"  | {status_of(after, names)}")
    for name, value in new.items():
        if old.get(name) == value:
            continue
        if name == "Timeline" and name in old:
            seen = set(old[name].splitlines())
            added = [line for line in value.splitlines() if line not in seen]
            lines += [f"  | Timeline: + {plain(line, names, after.at)}" for line in added]
            continue
        lines.append(f"  | {name}: {plain(value, names, after.at)}")
    lines += [f"  | (no longer shown) {name}" for name in old if name not in new]
    return "\n".join(lines)


# -- HTML -------------------------------------------------------------------------------------------

_STYLE = """
body { background: #313338; color: #dbdee1; font: 15px/1.4 "gg sans", "Noto Sans", "Helvetica Neue", Arial,
  sans-serif; margin: 0; padding: 24px; }
main { max-width: 860px; margin: 0 auto; }
h1 { color: #f2f3f5; font-size: 22px; }
p.intro { color: #b5bac1; }
section { margin: 28px 0; }
h2 { color: #949ba4; font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
  border-bottom: 1px solid #3f4147; padding-bottom: 4px; }
.message { padding: 6px 0 6px 56px; position: relative; }
.message .avatar { position: absolute; left: 0; top: 6px; width: 40px; height: 40px; border-radius: 50%;
  background: #5865f2; color: #fff; font-weight: 700; display: flex; align-items: center; justify-content: center; }
.head { margin-bottom: 2px; }
.author { color: #f2f3f5; font-weight: 600; }
.app { background: #5865f2; color: #fff; font-size: 10px; font-weight: 700; border-radius: 3px;
  padding: 1px 4px; margin: 0 4px; vertical-align: 1px; }
.meta { color: #949ba4; font-size: 12px; }
.ephemeral { color: #949ba4; font-size: 12px; margin-top: 4px; }
.embed { background: #2b2d31; border-left: 4px solid #5865f2; border-radius: 4px; padding: 8px 16px 12px 12px;
  margin-top: 4px; max-width: 520px; }
.embed .title { color: #f2f3f5; font-weight: 700; margin: 4px 0; }
.embed .fields { display: grid; grid-template-columns: repeat(3, 1fr); gap: 8px 12px; margin-top: 8px; }
.embed .field { grid-column: span 1; }
.embed .field.wide { grid-column: 1 / -1; }
.embed .field .name { color: #f2f3f5; font-weight: 600; font-size: 13px; }
.embed .field .value { font-size: 14px; }
.embed img { max-width: 100%; border-radius: 4px; margin-top: 12px; display: block; }
.embed .footer { color: #949ba4; font-size: 12px; margin-top: 8px; }
.attachments { display: flex; flex-wrap: wrap; gap: 6px; margin-top: 6px; }
.attachments img { width: 160px; height: 160px; object-fit: cover; border-radius: 6px; }
.note { color: #949ba4; font-size: 13px; font-style: italic; margin-top: 4px; }
.buttons { margin-top: 6px; }
.button { display: inline-block; padding: 4px 16px; border-radius: 4px; color: #fff; font-size: 14px;
  font-weight: 500; margin-right: 8px; background: #4e5058; }
.button.primary { background: #5865f2; } .button.success { background: #248046; }
.button.danger { background: #da373c; } .button.disabled { opacity: .5; }
code { background: #1e1f22; border-radius: 3px; padding: 0 3px; font-size: 13px; }
.mention { background: rgba(88,101,242,.3); color: #c9cdfb; border-radius: 3px; padding: 0 2px; }
.time { background: #3f4147; border-radius: 3px; padding: 0 2px; }
a { color: #00a8fc; }
summary { color: #949ba4; font-size: 13px; cursor: pointer; }
"""


def _embed_html(embed: JSON, shot: Shot, names: Names) -> str:
    colour = embed.get("color")
    style = f' style="border-left-color: #{int(colour):06x}"' if isinstance(colour, int) else ""
    parts = [f'<div class="embed"{style}>']
    if embed.get("title"):
        parts.append(f'<div class="title">{rich(str(embed["title"]), names, shot.at)}</div>')
    if embed.get("description"):
        parts.append(f'<div class="description">{rich(str(embed["description"]), names, shot.at)}</div>')
    fields = embed.get("fields", [])
    if fields:
        parts.append('<div class="fields">')
        for fld in fields:
            wide = "" if fld.get("inline") else " wide"
            parts.append(
                f'<div class="field{wide}"><div class="name">{rich(str(fld.get("name", "")), names, shot.at)}</div>'
                f'<div class="value">{rich(str(fld.get("value", "")), names, shot.at)}</div></div>'
            )
        parts.append("</div>")
    url = (embed.get("image") or {}).get("url")
    if isinstance(url, str):
        picture = shot.embed_pictures.get(url)
        if picture is not None and shot.show_pictures:
            parts.append(f'<img src="{picture.data_uri}" alt="{html.escape(picture.filename)}">')
        elif picture is not None:
            parts.append(f'<div class="note">{html.escape(picture.describe())}</div>')
    footer = (embed.get("footer") or {}).get("text")
    if footer:
        parts.append(f'<div class="footer">{rich(str(footer), names, shot.at)}</div>')
    parts.append("</div>")
    return "".join(parts)


def shot_html(shot: Shot, names: Names) -> str:
    time = shot.at.astimezone().strftime("%H:%M:%S")
    edited = ' <span class="meta">(edited)</span>' if shot.edited else ""
    opening = f"<section><h2>{html.escape(shot.heading)}</h2>"
    if not shot.show_pictures:  # an intermediate edit: folded, so the page reads from shot to shot
        summary = html.escape(f"{shot.heading}: {status_of(shot, names)}")
        opening = f"<section><details><summary>{summary}</summary>"
    parts = [
        opening,
        '<div class="message">',
        f'<div class="avatar">{html.escape(shot.author[:1].upper())}</div>',
        f'<div class="head"><span class="author">{html.escape(shot.author)}</span><span class="app">APP</span>'
        f'<span class="meta">{html.escape(shot.where)} · {time}</span>{edited}</div>',
    ]
    if shot.content:
        parts.append(f'<div class="content">{rich(shot.content, names, shot.at)}</div>')
    parts += [_embed_html(embed, shot, names) for embed in shot.embeds]
    shown_in_embeds = {id(p) for p in shot.embed_pictures.values()}
    loose = [p for p in shot.attachments if id(p) not in shown_in_embeds]
    if loose and shot.show_pictures:
        images = "".join(
            f'<img src="{p.data_uri}" alt="{html.escape(p.filename)}" title="{html.escape(p.describe())}">'
            for p in loose
        )
        parts.append(f'<div class="attachments">{images}</div>')
    elif loose:
        parts.append(f'<div class="note">{len(loose)} attachments, as shown above</div>')
    for row in shot.buttons:
        buttons = "".join(
            f'<span class="button {_BUTTON_STYLES.get(int(b.get("style", 2)), "secondary")}'
            f'{" disabled" if b.get("disabled") else ""}">{html.escape(button_label(b))}</span>'
            for b in row
        )
        parts.append(f'<div class="buttons">{buttons}</div>')
    if shot.ephemeral:
        parts.append('<div class="ephemeral">Only you can see this message</div>')
    parts.append("</div></details></section>" if not shot.show_pictures else "</div></section>")
    return "\n".join(parts)


def transcript_html(title: str, intro: str, shots: Sequence[Shot], names: Names) -> str:
    """One self-contained page: every shot in order, pictures embedded as data: URIs."""
    body = "\n".join(shot_html(shot, names) for shot in shots)
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n"
        f'<body><main><h1>{html.escape(title)}</h1><p class="intro">{html.escape(intro)}</p>\n{body}\n'
        "</main></body></html>\n"
    )
