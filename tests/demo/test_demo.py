"""`lorabot demo` as a newcomer runs it: a subprocess with no token, no key and no network."""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from bot.demo.transcript import Names, plain, rich

ROOT = Path(__file__).resolve().parents[2]

# Loaded into the demo's interpreter through PYTHONPATH: any connection to, or name lookup of, an
# address that is not loopback is refused and written down, so the test sees every attempt.
NO_NETWORK = """
import ipaddress, os, socket

_LOG = os.environ["NETWORK_ATTEMPTS_LOG"]


def _loopback(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(what):
    with open(_LOG, "a") as log:
        log.write(what + "\\n")
    raise OSError("network access refused by the test: " + what)


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect {address!r}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _refuse(f"connect_ex {address!r}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _loopback(host):
        _refuse(f"getaddrinfo {host!r}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


def demo_env(tmp_path: Path) -> dict[str, str]:
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NO_NETWORK)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SDAPI_", "PUBLIC_", "WEBHOOK_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(guard), str(ROOT)]),
        NETWORK_ATTEMPTS_LOG=str(tmp_path / "network-attempts.log"),
        TMPDIR=str(temp),
        # Neither the environment nor a .env file may reach the demo's settings.
        DATABASE_URL=f"sqlite:///{tmp_path / 'from-env.db'}",
        READY_SAMPLES="4",
    )
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'from-dotenv.db'}\nDISCORD_TOKEN=nope\n")
    return env


def data_uri_image(page: str, alt: str) -> Image.Image:
    match = re.search(r'<img src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)" alt="' + re.escape(alt) + '"', page)
    assert match, f"no embedded {alt} in the transcript"
    return Image.open(io.BytesIO(base64.b64decode(match[1])))


def test_demo_runs_the_real_bot_offline_and_writes_a_transcript(tmp_path: Path) -> None:
    out = tmp_path / "transcript.html"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--out", str(out)],
        capture_output=True,
        text=True,
        env=demo_env(tmp_path),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert elapsed < 60, elapsed
    assert not (tmp_path / "network-attempts.log").exists(), (tmp_path / "network-attempts.log").read_text()

    stdout = result.stdout
    # The ephemeral preview, with its grid and buttons...
    preview = stdout.index("Preview: photo of sks man")
    assert "only you can see this" in stdout[:preview]
    assert "[image: preview.jpg" in stdout and "[ Start training ]" in stdout
    # ...the card at submission with the crops, its edits, the card at ready, then the DM, in that order.
    submitted = stdout.index("The job card, posted in the channel at submission")
    assert "Submitting to the provider" in stdout[submitted:]
    assert "photo1.jpg (512x512" in stdout[submitted:]
    assert "Training started" in stdout[submitted:]
    ready = stdout.index("The job card at ready")
    assert "Model ready" in stdout[ready:]
    dm = stdout.index("The DM to alice")
    assert preview < submitted < ready < dm
    assert "Your LoRA photo of sks man (job #1) is ready." in stdout[dm:]
    assert "@alice" in stdout and "<@" not in stdout and "<t:" not in stdout  # markup rendered

    page = out.read_text(encoding="utf-8")
    grid = data_uri_image(page, "preview.jpg")
    assert grid.width > grid.height  # the grid of the five crops
    crop = data_uri_image(page, "photo1.jpg")
    assert crop.size == (512, 512)
    for text in ("Preview: photo of sks man", "Model ready", "(job #1) is ready", "Generate"):
        assert text in page, text
    assert page.index("The job card at ready") < page.index("The DM to alice") < page.index("(job #1) is ready")

    # A throwaway database in a temporary directory, removed at the end; nothing from the environment.
    assert not list((tmp_path / "tmp").iterdir())
    assert not (tmp_path / "from-env.db").exists() and not (tmp_path / "from-dotenv.db").exists()


def test_help_lists_demo() -> None:
    out = subprocess.run([sys.executable, "-m", "bot", "demo", "--help"], capture_output=True, text=True, check=True)
    assert "--out" in out.stdout


def test_lorabot_run_does_not_import_the_discord_stand_in() -> None:
    """`lorabot run` keeps its start-up cost and memory: the stand-in and the demo are not loaded."""
    code = (
        "import sys, bot.cli, bot.app, bot.discord_bot\n"
        "from bot.discord_bot import EXTENSIONS\n"
        "for name in EXTENSIONS: __import__(name)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('bot.discord_standin', 'bot.demo'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_discord_markup_reads_as_discord_shows_it() -> None:
    names = Names(users={42: "alice"}, channels={7: "general"})
    now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    later = int((now + timedelta(minutes=10)).timestamp())
    text = f"**Done** <@42> in <#7>, `id-1` expires <t:{later}:R> <script>"
    assert plain(text, names, now) == "Done @alice in #general, id-1 expires in 10 minutes <script>"
    html = rich(text, names, now)
    assert "<strong>Done</strong>" in html and "<code>id-1</code>" in html and "in 10 minutes" in html
    assert "@alice" in html and "&lt;script&gt;" in html and "<script>" not in html
