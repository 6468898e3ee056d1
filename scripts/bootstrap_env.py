"""Write a `.env` for `make run` on first use: a random SECRET_KEY and, without partner
credentials, the sandbox upstream. An existing `.env` is never overwritten."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV = Path(__file__).resolve().parent.parent / ".env"


def main() -> None:
    if ENV.exists():
        print(f"Using the existing {ENV.name}.")
        return
    lines = [
        "# Written by `make run` on first use. Edit freely; it is never overwritten.",
        f"SECRET_KEY={secrets.token_urlsafe(50)}",
        "# make run serves plain HTTP on 127.0.0.1: cookies cannot be Secure there.",
        "SECURE_COOKIES=off",
        f"DEMO_ADMIN_PASSWORD={secrets.token_urlsafe(12)}",
    ]
    if not (
        os.environ.get("CASHBACK_PARTNER")
        and (os.environ.get("CASHBACK_PARTNER_KEY") or os.environ.get("CASHBACK_PARTNER_KEY_FILE"))
    ):
        lines += [
            "# No partner credentials were configured: talk to the local sandbox upstream.",
            "CASHBACK_SANDBOX=on",
        ]
    ENV.write_text("\n".join(lines) + "\n")
    ENV.chmod(0o600)
    print(
        f"Wrote {ENV.name} with a new SECRET_KEY"
        + (" and CASHBACK_SANDBOX=on." if "CASHBACK_SANDBOX=on" in lines else ".")
    )


if __name__ == "__main__":
    main()
