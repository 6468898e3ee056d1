"""Issue a merchant a new API key; optionally expire or revoke its older keys.

Rotation with overlap: by default the old keys keep working, so the merchant can deploy the
new key and the old ones are revoked later (`--revoke-old`) or expire by themselves
(`--expire-old-in HOURS`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from audit.services import Actor
from merchants.models import ApiKey, Merchant
from merchants.services import rotate_api_key


def _hours(value: str) -> float:
    try:
        hours = float(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a number of hours") from None
    if not 0 <= hours <= 24 * 365:
        raise CommandError("--expire-old-in takes 0 to 8760 hours")
    return hours


def _describe(key: ApiKey) -> dict[str, Any]:
    return {
        "key": str(key),
        "name": key.name,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


class Command(BaseCommand):
    help = (
        "Issue a new API key for MERCHANT (its public id) and print it once; older keys keep "
        "working unless --expire-old-in or --revoke-old is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("merchant", help="the merchant's public id")
        old = parser.add_mutually_exclusive_group()
        old.add_argument(
            "--expire-old-in",
            type=_hours,
            metavar="HOURS",
            help="the merchant's other keys stop working after HOURS",
        )
        old.add_argument(
            "--revoke-old", action="store_true", help="revoke the merchant's other keys now"
        )
        parser.add_argument("--name", default="", help="a label for the new key")
        parser.add_argument("--json", action="store_true", help="print one JSON line")

    def handle(self, *args: Any, **opts: Any) -> None:
        merchant = Merchant.objects.filter(public_id=opts["merchant"]).first()
        if merchant is None:
            raise CommandError(f"No merchant with public id {opts['merchant']!r}.")
        hours = opts["expire_old_in"]
        expire_at = timezone.now() + timedelta(hours=hours) if hours is not None else None
        key, raw, old = rotate_api_key(
            merchant,
            name=opts["name"],
            expire_old_at=expire_at,
            revoke_old=opts["revoke_old"],
            actor=Actor.command_line("rotate_api_key"),
        )
        if opts["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "merchant_id": merchant.public_id,
                        "api_key": raw,
                        "key": str(key),
                        "old_keys": [_describe(k) for k in old],
                    }
                )
            )
            return
        self.stdout.write(f"Merchant: {merchant.public_id}")
        self.stdout.write(f"New API key {key} (shown only now): {raw}")
        for k in old:
            if k.revoked_at:
                state = "revoked"
            elif k.expires_at:
                state = f"expires {k.expires_at:%Y-%m-%d %H:%M %Z}"
            else:
                state = "still active; revoke it with --revoke-old once the new key is deployed"
            self.stdout.write(f"Old key {k}: {state}")
