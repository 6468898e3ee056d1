"""The one description of each report's columns; it drives the header, the query and both
writers (CSV and XLSX).

A `Table` names the values it reads from the database (`sources`: name → ORM expression,
fetched with `values_list` in that order) and its `columns`. A column has a header `name`,
a `kind` (how its value is typed, formatted and totalled) and the source(s) it reads.

To add a column, add a source if it needs one and a `Column` to the list: the header,
the rows (`rows()`, exact Decimals for XLSX), the fast CSV rows (`csv_rows()`) and the
XLSX number formats all follow. The row functions are generated once from the description
as plain Python source (like `collections.namedtuple` did): a function call per cell costs
a third of the export's hot loop, so each kind gives an inline expression instead.
`source(table, mode)` shows the generated code.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import (
    Case,
    CharField,
    Count,
    F,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce

from cashback.models import Purchase, Status
from cashback.reports.cells import FORMULA_START, Cell
from cashback.reports.times import LocalTimes
from gateway.money import Currency, bytes_to_gbyte, format_minor, from_minor

# Rows fetched per round trip when streaming a report (a server-side cursor on PostgreSQL).
CHUNK_SIZE = 5000

# Kinds of column. For each: the expression of its value, and of its CSV text, over `v`
# (the source) and `c` (the currency source, for amounts). `iso` formats a stored time,
# `P` caches the text of percentages (few distinct ones occur).
KINDS: dict[str, tuple[str, str]] = {
    # ISO 8601 text with the offset in the report's zone.
    "time": ("iso(v)", "iso(v)"),
    # Free text: escaped against formulas in the CSV here, in the writers for rows().
    "text": ("v", '("\'" + v if v[:1] in RISKY else v)'),
    # A fixed code (status, currency): never starts a formula, nothing to escape.
    "code": ("v", "v"),
    # Minor units of the currency in `c`, as an exact Decimal with the currency's places.
    "amount": ("from_minor(v, c)", "format_minor(v, c)"),
    "percent": ("v", 'P.get(v) or P.setdefault(v, format(v, "f"))'),
    # Whole numbers: counts, bytes.
    "count": ("v", "str(v)"),
    # Bytes shown in GBYTE, exactly.
    "gbyte": ("bytes_to_gbyte(v)", "format_minor(v, GBYTE)"),
}

# Kinds whose values a spreadsheet holds as numbers (and may total).
NUMERIC_KINDS = frozenset({"amount", "percent", "count", "gbyte"})


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    source: str
    # The source holding the currency of an amount column.
    currency: str = ""
    # What a NULL source becomes: "empty" (no value) or "zero"; "never" for NOT NULL sources.
    null: str = "never"
    # Whether a totals row sums this column (per currency for amounts).
    total: bool = False

    def expression(self, mode: str) -> str:
        """Return the Python expression of this cell; mode "value" or "csv"."""
        value, text = KINDS[self.kind]
        expr = value if mode == "value" else text
        v = self.source
        if self.null == "zero":
            v = f"({v} or 0)"
        expr = _substitute(expr, v, self.currency)
        if self.null == "empty":
            empty = "None" if mode == "value" else '""'
            expr = f"{empty} if {self.source} is None else {expr}"
        return expr


def _substitute(expr: str, v: str, c: str) -> str:
    """Put the source names in place of the placeholders `v` and `c` (whole words only)."""
    return re.sub(r"\b[vc]\b", lambda m: v if m.group() == "v" else c, expr)


@dataclass(frozen=True)
class Table:
    name: str
    sources: dict[str, Any]
    columns: tuple[Column, ...]
    # Turn a filtered queryset of purchases into the rows of `sources`, in report order.
    query: Callable[[QuerySet[Purchase], dict[str, Any]], Iterable[tuple[Any, ...]]]
    _compiled: dict[str, Callable[..., Iterator[list[Any]]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def header(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def records(self, purchases: QuerySet[Purchase]) -> Iterable[tuple[Any, ...]]:
        return self.query(purchases, self.sources)

    def function(self, mode: str) -> Callable[..., Iterator[list[Any]]]:
        """Return the generated row function of `mode` ("value" or "csv")."""
        if mode not in self._compiled:
            namespace: dict[str, Any] = dict(_NAMES)
            # The text is built only from this module's fixed names and expressions.
            exec(compile(source(self, mode), f"<report {self.name} {mode}>", "exec"), namespace)  # noqa: S102
            self._compiled[mode] = namespace["rows"]
        return self._compiled[mode]


# What the generated code may use; bound as default arguments, i.e. fast local names.
_NAMES: dict[str, Any] = {
    "from_minor": from_minor,
    "format_minor": format_minor,
    "bytes_to_gbyte": bytes_to_gbyte,
    "GBYTE": Currency.GBYTE.value,
    "RISKY": FORMULA_START,
}


def source(table: Table, mode: str) -> str:
    """Return the Python source of the row function of `table` for `mode`."""
    names = ", ".join(table.sources)
    cells = ",\n            ".join(c.expression(mode) for c in table.columns)
    local = ", ".join(f"{n}={n}" for n in _NAMES)
    return (
        f"def rows(records, iso, P, {local}):\n"
        f"    for ({names},) in records:\n"
        f"        yield [\n            {cells},\n        ]\n"
    )


def rows(table: Table, purchases: QuerySet[Purchase], times: LocalTimes) -> Iterator[list[Cell]]:
    """Yield the table's rows as typed cells: text, exact Decimal amounts, ints, None."""
    return table.function("value")(table.records(purchases), times.iso, {})


def csv_rows(table: Table, purchases: QuerySet[Purchase], times: LocalTimes) -> Iterator[list[str]]:
    """Yield the table's rows as CSV text cells, formatted straight from integers and text
    (the export's hot loop: a million rows should cost little more than the database's COPY).
    """
    return table.function("csv")(table.records(purchases), times.iso, {})


# --- The detail report: one row per purchase -------------------------------------------------


def _detail_query(
    purchases: QuerySet[Purchase], sources: dict[str, Any]
) -> Iterable[tuple[Any, ...]]:
    annotations = {name: expr for name, expr in sources.items() if expr is not None}
    return (
        purchases.order_by("created_at", "id")
        .annotate(**annotations)
        .values_list(*sources)
        .iterator(chunk_size=CHUNK_SIZE)
    )


_text: Any = CharField()

DETAIL = Table(
    "detail",
    # The two times come as database text, not datetimes: Django's PostgreSQL loader for
    # timestamptz is pure Python and costs more than the rest of the row; LocalTimes formats
    # the text instead (several times faster on a million rows). None: a plain field.
    sources={
        "created_text": Cast("created_at", _text),
        "sent_text": Cast("sent_at", _text),
        "merchant__public_id": None,
        "merchant__name": None,
        "order_id": None,
        "customer": None,
        "status": None,
        "currency": None,
        "amount_minor": None,
        "requested_percentage": None,
        "percentage": None,
        # Only a sent purchase's reservation was captured, i.e. paid by the merchant.
        "funded_minor": Case(When(status=Status.SENT, then=F("reserved_minor")), default=Value(0)),
        "cashback_amount": None,
        "unit": None,
        "error": None,
        # What the merchant sent; the same as currency/amount unless it was converted.
        "orig_currency": Coalesce("original_currency", "currency"),
        "orig_minor": Coalesce("original_amount_minor", "amount_minor"),
        "fx_rate": None,
        "fx_settlement_rate": None,
        "fx_date_text": Cast("fx_rate_date", _text),
        "fx_rate_source": None,
    },
    columns=(
        Column("created_at", "time", "created_text"),
        Column("sent_at", "time", "sent_text", null="empty"),
        Column("merchant_id", "text", "merchant__public_id"),
        Column("merchant_name", "text", "merchant__name"),
        Column("order_id", "text", "order_id"),
        Column("customer", "text", "customer"),
        Column("status", "code", "status"),
        Column("currency", "code", "currency"),
        Column("amount", "amount", "amount_minor", currency="currency", total=True),
        Column("requested_percentage", "percent", "requested_percentage"),
        Column("applied_percentage", "percent", "percentage"),
        Column("partner_funded", "amount", "funded_minor", currency="currency", total=True),
        Column("cashback_bytes", "count", "cashback_amount", null="empty", total=True),
        Column("cashback_gbyte", "gbyte", "cashback_amount", null="empty", total=True),
        Column("unit", "text", "unit", null="empty"),
        Column("error", "text", "error", null="empty"),
        # Converted purchases (docs/currencies.md): `currency`/`amount` above are what was
        # sent upstream, in the settlement currency; these say what the merchant sent.
        Column("original_currency", "code", "orig_currency"),
        Column("original_amount", "amount", "orig_minor", currency="orig_currency", total=True),
        Column("fx_rate", "code", "fx_rate", null="empty"),
        Column("fx_settlement_rate", "code", "fx_settlement_rate", null="empty"),
        Column("fx_rate_date", "code", "fx_date_text", null="empty"),
        Column("fx_rate_source", "code", "fx_rate_source", null="empty"),
    ),
    query=_detail_query,
)


# --- The summary report: one row per merchant and currency -----------------------------------


def status_counts() -> dict[str, Any]:
    """Return the aggregates of a group of purchases, as the dashboard and summary use them."""
    sent = Q(status=Status.SENT)
    return {
        "purchases": Count("pk"),
        "sent": Count("pk", filter=sent),
        "rejected": Count("pk", filter=Q(status=Status.REJECTED)),
        "pending_unknown": Count("pk", filter=Q(status__in=[Status.PENDING, Status.UNKNOWN])),
        "queued_sending": Count("pk", filter=Q(status__in=[Status.QUEUED, Status.SENDING])),
        "failed": Count("pk", filter=Q(status=Status.FAILED)),
        "volume": Sum("amount_minor"),
        "sent_volume": Sum("amount_minor", filter=sent),
        # The partner-funded cost of a sent purchase is captured from the deposit.
        "funded": Sum("reserved_minor", filter=sent),
        "cashback": Sum("cashback_amount", filter=sent),
    }


def _summary_query(
    purchases: QuerySet[Purchase], sources: dict[str, Any]
) -> Iterable[tuple[Any, ...]]:
    groups = ["merchant__public_id", "merchant__name", "currency", "orig_currency"]
    measures = {
        name: expr for name, expr in sources.items() if expr is not None and name not in groups
    }
    return (
        purchases.annotate(orig_currency=sources["orig_currency"])
        .values(*groups)
        .annotate(**measures)
        .order_by("merchant__public_id", "currency", "orig_currency")
        .values_list(*sources)
    )


SUMMARY = Table(
    "summary",
    sources={
        "merchant__public_id": None,
        "merchant__name": None,
        "currency": None,
        **status_counts(),
        # One row per settlement currency and currency the merchant sent: the amounts above
        # add up in the settlement currency, these in the currency sent.
        "orig_currency": Coalesce("original_currency", "currency"),
        "original_volume": Sum(Coalesce("original_amount_minor", "amount_minor")),
        "original_sent_volume": Sum(
            Coalesce("original_amount_minor", "amount_minor"), filter=Q(status=Status.SENT)
        ),
    },
    columns=(
        Column("merchant_id", "text", "merchant__public_id"),
        Column("merchant_name", "text", "merchant__name"),
        Column("currency", "code", "currency"),
        *(
            Column(name, "count", name, total=True)
            for name in (
                "purchases",
                "sent",
                "rejected",
                "pending_unknown",
                "queued_sending",
                "failed",
            )
        ),
        Column("volume", "amount", "volume", currency="currency", null="zero", total=True),
        Column(
            "sent_volume", "amount", "sent_volume", currency="currency", null="zero", total=True
        ),
        Column("partner_funded", "amount", "funded", currency="currency", null="zero", total=True),
        Column("cashback_bytes", "count", "cashback", null="zero", total=True),
        Column("cashback_gbyte", "gbyte", "cashback", null="zero", total=True),
        Column("original_currency", "code", "orig_currency"),
        Column(
            "original_volume",
            "amount",
            "original_volume",
            currency="orig_currency",
            null="zero",
            total=True,
        ),
        Column(
            "original_sent_volume",
            "amount",
            "original_sent_volume",
            currency="orig_currency",
            null="zero",
            total=True,
        ),
    ),
    query=_summary_query,
)

TABLES = {t.name: t for t in (DETAIL, SUMMARY)}
