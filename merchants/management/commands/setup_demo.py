"""Create the demo admin and merchant for `make run`, and print how to use them."""

from __future__ import annotations

import json
import os
import secrets
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from accounts.twofactor import issue_backup_code
from audit.services import Actor
from merchants.models import ApiKey, EntryKind, Merchant
from merchants.services import create_merchant, record_entry

DEMO_KEY_NAME = "make run"
DEMO_DEVICE_NAME = "make run backup code"


class Command(BaseCommand):
    help = "Create an admin user and a demo merchant if absent; print a login and a curl example."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "")
        User = get_user_model()
        if password and not User.objects.filter(username="admin").exists():
            User.objects.create_superuser("admin", "admin@example.com", password)
        admin_user = User.objects.filter(username="admin").first()
        second_factor = ""
        if settings.ADMIN_REQUIRE_2FA and admin_user is not None:
            # Staff sign in with a second factor: a one-use backup code, new for each run,
            # until the admin sets up an authenticator app at /admin/2fa/setup/.
            code = issue_backup_code(admin_user, DEMO_DEVICE_NAME)
            second_factor = f", authentication code {code} (one use, new each run)"

        merchant = Merchant.objects.filter(public_id="demo-shop").first()
        if merchant is None:
            actor = Actor.command_line("setup_demo")
            merchant, _ = create_merchant(
                "Demo Shop", public_id="demo-shop", percentage=Decimal(1), actor=actor
            )
            record_entry(
                merchant,
                EntryKind.DEPOSIT,
                Decimal("100.00"),
                "EUR",
                memo="demo deposit",
                actor=actor,
            )
        # Keys are stored hashed, so each run issues a fresh demo key and revokes every other
        # key of the demo merchant (the last run's, and the unprinted one create_merchant
        # made): only the key printed below works.
        from django.utils import timezone

        demo_key, key = ApiKey.issue(merchant, name=DEMO_KEY_NAME)
        ApiKey.objects.filter(merchant=merchant, revoked_at__isnull=True).exclude(
            pk=demo_key.pk
        ).update(revoked_at=timezone.now())
        # A new order id each run: the printed curl is answered 201, not a 200 replay of the
        # order an earlier run stored.
        order_id = f"A-{timezone.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"

        body = json.dumps(
            {
                "customer": "c-42",
                "order_id": order_id,
                "description": "coffee",
                "address": "WR5FPYE6LHBQ57ZCFUTJXDDNHWK5355S",
                "currency": "EUR",
                "currency_amount": "12.50",
            }
        )
        mode = (
            "SANDBOX upstream (no real cashback is paid)"
            if settings.CASHBACK_SANDBOX
            else settings.CASHBACK_API_URL
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"  Cashback gateway on {base_url}  —  upstream: {mode}",
                    f"  Admin:     {base_url}/admin/   user admin, password {password or '(see DEMO_ADMIN_PASSWORD in .env)'}{second_factor}",
                    f"  API docs:  {base_url}/api/docs/",
                    f"  Demo merchant {merchant.public_id}, API key (new for this run): {key}",
                    "",
                    "  Report a purchase:",
                    f'  curl -i -X POST {base_url}/api/v1/purchases -H "Authorization: Bearer {key}" '
                    f"-H 'Content-Type: application/json' -d '{body}'",
                    "",
                ]
            )
        )
