"""``profilo usage`` (an account's metered usage as a table) and ``profilo limits show|set``
(the operator's limits). They read and write the records database directly, so they work
with the proxy running or not; a running proxy's last ``usage.flush_seconds`` of calls may
not be written yet, and a limit set here reaches the replicas within
``usage.limits_refresh_seconds``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from proxy.config import Settings
from proxy.errors import BadRequest
from proxy.identity import end_user_id
from proxy.schemas.usage import LimitsBody
from proxy.services.usage import build_report, limits_report, parse_time, set_limits
from proxy.store.db import open_database
from proxy.store.keys import KeyStore
from proxy.store.usage import UsageStore

_LIMIT_FLAGS = {
    "rpm": "requests_per_minute",
    "tpm": "tokens_per_minute",
    "budget": "monthly_budget",
    "jobs": "extraction_jobs_per_minute",
}


def add_parsers(sub: Any) -> None:
    """The ``usage`` and ``limits`` sub-commands (called by ``proxy.cli``)."""
    usage = sub.add_parser("usage", help="an account's metered usage (tokens, memory, cost)")
    usage.add_argument("--account", required=True)
    usage.add_argument("--from", dest="since", default=None, help="date or epoch (default: 1st)")
    usage.add_argument("--to", dest="until", default=None, help="date or epoch (default: now)")
    usage.add_argument(
        "--group-by", choices=("day", "model", "end_user", "key", "kind"), default="day"
    )
    usage.add_argument("--json", action="store_true", help="the report as JSON")
    limits = sub.add_parser("limits", help="usage limits per account and per key")
    lsub = limits.add_subparsers(dest="limits_command", required=True)
    show = lsub.add_parser("show", help="an account's limits and its keys'")
    show.add_argument("--account", required=True)
    put = lsub.add_parser("set", help="set limits (the flags given; --clear removes all)")
    put.add_argument("--account", required=True)
    put.add_argument("--key", default=None, help="a key id of the account (default: the account)")
    put.add_argument("--rpm", type=int, default=None, help="requests per minute")
    put.add_argument("--tpm", type=int, default=None, help="tokens per minute")
    put.add_argument("--budget", type=float, default=None, help="USD per calendar month (UTC)")
    put.add_argument("--jobs", type=int, default=None, help="extraction jobs per minute")
    put.add_argument("--clear", action="store_true", help="remove every limit first")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def _table(report: dict[str, Any]) -> str:
    group = "key_id" if report["group_by"] == "key" else report["group_by"]
    head = [group, "requests", "prompt", "completion", "memory", "extraction", "dialectic", "cost"]
    rows = [
        [_cell(row[group]), row["requests"], row["prompt_tokens"], row["completion_tokens"],
         row["memory_tokens"], row["tokens_by_kind"]["extraction"],
         row["tokens_by_kind"]["dialectic"], _cell(row["cost"])]
        for row in [*report["data"], {**report["total"], group: "total"}]
    ]  # fmt: skip
    cells = [head, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in cells]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_usage(settings: Settings, args: argparse.Namespace) -> int:
    store = UsageStore(open_database(settings))
    report = build_report(
        store,
        end_user_id(args.account, "account"),
        parse_time(args.since, "from"),
        parse_time(args.until, "to"),
        args.group_by,
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    span = " to ".join(
        datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M") for t in (report["from"],
                                                                            report["to"])
    )  # fmt: skip
    print(f"usage of {report['account']} ({span} UTC, cost in {report['currency']})")
    print(_table(report))
    return 0


def run_limits(settings: Settings, args: argparse.Namespace) -> int:
    db = open_database(settings)
    store = UsageStore(db)
    account = end_user_id(args.account, "account")
    if args.limits_command == "set":
        now = limits_report(store, account)
        current = now["keys"].get(args.key, {}) if args.key else now["limits"]
        values = {} if args.clear else {k: v for k, v in current.items() if v is not None}
        values |= {
            field: getattr(args, flag)
            for flag, field in _LIMIT_FLAGS.items()
            if getattr(args, flag) is not None
        }
        try:
            body = LimitsBody.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise BadRequest(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        set_limits(store, KeyStore(db), account, args.key, body.limits())
    print(json.dumps(limits_report(store, account), indent=2))
    return 0
