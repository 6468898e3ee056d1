"""Record audit events, with values made JSON-safe and secrets left out.

Every write names its actor: a staff user, a merchant's API key, or the command line (the
OS user who ran it). Services call `record` inside their own transaction, so the change and
its audit row are committed together or not at all.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import models

from audit.models import AuditEvent

# Fields whose values never enter the log; a change to one is logged as "(changed)".
SECRET_FIELDS = frozenset({"hashed_key", "webhook_secret", "password", "partner_key"})
# Bookkeeping fields that change on every save and say nothing about the change.
IGNORED_FIELDS = frozenset({"updated_at"})
REDACTED = "(secret)"

Changes = dict[str, list[Any]]


def json_value(value: Any) -> Any:
    """Return `value` as something JSON can hold exactly (decimals and times as strings)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, models.Model):
        return str(value.pk)
    return value


def snapshot(obj: models.Model) -> dict[str, Any]:
    """Return the concrete field values of `obj`, secrets replaced by a digest."""
    values: dict[str, Any] = {}
    for field in obj._meta.concrete_fields:
        if field.name in IGNORED_FIELDS:
            continue
        value = getattr(obj, field.attname)
        if isinstance(value, Decimal) and isinstance(field, models.DecimalField):
            # "2.5" typed in a form and "2.50" read back are the same value: compare alike.
            value = value.quantize(Decimal(1).scaleb(-field.decimal_places))
        if field.name in SECRET_FIELDS:
            # A digest only to notice a change; record() never stores it.
            value = hashlib.sha256(str(value).encode()).hexdigest()
        values[field.name] = json_value(value)
    return values


def diff(before: dict[str, Any], after: dict[str, Any]) -> Changes:
    """Return {field: [before, after]} for every field whose value differs."""
    changes: Changes = {}
    for name in before.keys() | after.keys():
        old, new = before.get(name), after.get(name)
        if old != new:
            changes[name] = [old, new]
    return dict(sorted(changes.items()))


@dataclass(frozen=True)
class Actor:
    """Who made a change: `name` as the log shows it, and the staff user if it was one."""

    name: str
    user: Any = None

    @classmethod
    def of(cls, who: Any) -> Actor:
        """Return the actor for a user (or an Actor as it is); anything else is "system"."""
        if isinstance(who, Actor):
            return who
        if who is not None and getattr(who, "is_authenticated", False):
            return cls(who.get_username(), who)
        return cls("system")

    @classmethod
    def api_key(cls, key: Any) -> Actor:
        """Return the actor for a request authenticated by a merchant's API key."""
        return cls(f"api key {key} of {key.merchant.public_id}"[:150])

    @classmethod
    def command_line(cls, command: str) -> Actor:
        """Return the actor for a management command, named by the OS user who ran it."""
        try:
            os_user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry (some containers)
            os_user = f"uid {os.getuid()}"
        return cls(f"{os_user}@{socket.gethostname()} (manage.py {command})"[:150])


def record(
    actor: Any,
    action: str,
    obj: models.Model,
    changes: Changes | None = None,
    *,
    object_repr: str | None = None,
) -> AuditEvent:
    """Write one audit event for `actor` (a user or an Actor) doing `action` to `obj`."""
    who = Actor.of(actor)
    safe = {
        name: [REDACTED, REDACTED + ", changed"]
        if name in SECRET_FIELDS
        else [json_value(v) for v in pair]
        for name, pair in (changes or {}).items()
    }
    return AuditEvent.objects.create(
        actor=who.user,
        actor_name=who.name,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        object_repr=(object_repr if object_repr is not None else str(obj))[:200],
        changes=safe,
    )
