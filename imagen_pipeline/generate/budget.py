"""The budget guard: refuse a backend call that would push today's spend over a limit.

"Today" is the current UTC day (00:00 to 24:00 UTC), whatever the machine's time zone, so
every worker and the ``imagen usage`` report agree on where a day starts. Spend is the sum of
``cost_usd`` in ``mai.imagen_usage`` (succeeded and failed calls) created today, plus the
holds of calls checked but not recorded yet (``mai.imagen_budget_holds``). A check holds
every image its request still has to make (``count``) before the first call, under one
advisory lock, so neither a request for several images nor runs checking at the same moment
can pass a limit. A backend whose price is unknown cannot be called while a dollar limit
applies to it.

Limits: ``budget.daily_usd`` (all backends), ``budget.backends.<name>.daily_usd`` and, for
queued jobs only, ``budget.per_owner`` (dollars and images per owner, overall or per
instance), off by default. The operator's limits used up alert the operator (one event per
limit and repeat window); an owner's own limit is that owner's business.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import psycopg

from imagen_pipeline.alerts.notify import Alerts
from imagen_pipeline.backends.pricing import Price
from imagen_pipeline.config.models import BudgetConfig, OwnerLimits
from imagen_pipeline.db.connection import DATABASE_URL_ENV
from imagen_pipeline.db.errors import DatabaseStep, database_errors
from imagen_pipeline.errors import ConfigError, Fault, ImagenError

HOLD_TTL = timedelta(hours=1)
"""How long a hold counts when its call is never recorded (the run died)."""
BUDGET_LOCK_KEY = 0x696D616762756467
"""Advisory lock ("imagbudg") taken by every budget check, so checks happen one at a time."""


class BudgetUncheckableError(ConfigError):
    """A limit applies but the call cannot be priced, so it is not made."""


class BudgetExceededError(ImagenError):
    """The call would push today's spend over a configured daily limit (not retried).

    Over one of the operator's limits it is the server's fault (the operator set the
    budget); over an owner's own limit (``per_owner``) it is the request's, like any limit a
    user runs into.
    """

    public_summary = (
        "today's image budget for this backend is used up; retry the job tomorrow (UTC)"
    )

    def __init__(self, message: str, limit: BudgetLimit, *, public: str | None = None) -> None:
        super().__init__(message, public=public)
        self.limit = limit

    @property
    def fault(self) -> Fault:
        """The request's over an owner's own limit, else the server's."""
        return "request" if self.limit.per_owner else "server"


@dataclass(frozen=True)
class BudgetLimit:
    """One daily limit: dollars or images, for one instance or (``instance`` None) all, for
    everyone or (``per_owner``) for each owner."""

    label: str
    kind: Literal["usd", "images"]
    amount: float
    instance: str | None
    per_owner: bool = False

    def scope(self, instance: str) -> str:
        """``on 'flux'`` or ``on all backends``."""
        return f"on {instance!r}" if self.instance else "on all backends"

    def amount_text(self) -> str:
        """``$2.00`` or ``20 images``."""
        if self.kind == "usd":
            return f"${self.amount:.2f}"
        return f"{self.amount:g} image{'' if self.amount == 1 else 's'}"


@dataclass(frozen=True)
class BudgetAsk:
    """What a run asks of the budget before a backend call: the instance and its price per
    image, the run and the images it still has to make (this call's first), and who asks."""

    instance: str
    price: Price
    run_id: str
    variations: tuple[int, ...] = (0,)
    owner: str | None = None
    from_client: bool = False

    @property
    def images(self) -> int:
        """How many images the ask holds."""
        return len(self.variations)

    @property
    def usd(self) -> float:
        """The estimate of those images (0 when the price is unknown)."""
        return (self.price.usd or 0.0) * self.images


@dataclass(frozen=True)
class Used:
    """What a limit's scope has used today: recorded calls plus current holds."""

    usd: float
    images: int
    held_usd: float = 0.0

    def of(self, kind: str) -> float:
        """Dollars or images."""
        return self.usd if kind == "usd" else self.images


def _owner_limits(label: str, limits: OwnerLimits, instance: str | None) -> list[BudgetLimit]:
    found = []
    if limits.daily_usd is not None:
        found.append(BudgetLimit(f"{label}.daily_usd", "usd", limits.daily_usd, instance, True))
    if limits.daily_images is not None:
        found.append(
            BudgetLimit(f"{label}.daily_images", "images", limits.daily_images, instance, True)
        )
    return found


def limits_for(budget: BudgetConfig, instance: str, from_client: bool) -> list[BudgetLimit]:
    """The limits that apply to a call of ``instance``: its own, the global one and, for a
    queued job (``from_client``), its owner's on the instance and overall."""
    limits = []
    own = budget.backends.get(instance)
    if own is not None:
        limits.append(
            BudgetLimit(f"budget.backends.{instance}.daily_usd", "usd", own.daily_usd, instance)
        )
    if budget.daily_usd is not None:
        limits.append(BudgetLimit("budget.daily_usd", "usd", budget.daily_usd, None))
    if from_client:
        owner = budget.per_owner
        instance_limits = owner.backends.get(instance)
        if instance_limits is not None:
            label = f"budget.per_owner.backends.{instance}"
            limits += _owner_limits(label, instance_limits, instance)
        limits += _owner_limits("budget.per_owner", owner, None)
    return limits


def utc_day(now: datetime) -> tuple[datetime, datetime]:
    """Start and end of the UTC day containing ``now``."""
    start = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def resets(now: datetime) -> str:
    """When today's limits reset: ``at 00:00 UTC, in 3 h 12 min``."""
    left = utc_day(now)[1] - now.astimezone(UTC)
    hours, minutes = divmod(max(1, round(left.total_seconds() / 60)), 60)
    left_text = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"at 00:00 UTC, in {left_text}"


_USED = """
    WITH recorded AS (
        SELECT coalesce(sum(cost_usd), 0) AS usd,
               count(*) FILTER (WHERE status = 'succeeded') AS images
          FROM mai.imagen_usage
         WHERE created_at >= %(start)s AND created_at < %(end)s
           AND (%(instance)s::text IS NULL OR backend_instance = %(instance)s)
           AND (NOT %(per_owner)s OR owner_user_id IS NOT DISTINCT FROM %(owner)s::uuid)
    ), held AS (
        SELECT coalesce(sum(cost_usd), 0) AS usd, count(*) AS images
          FROM mai.imagen_budget_holds
         WHERE expires_at > now()
           AND NOT (run_id = %(run_id)s AND variation = ANY(%(variations)s))
           AND (%(instance)s::text IS NULL OR backend_instance = %(instance)s)
           AND (NOT %(per_owner)s OR owner_user_id IS NOT DISTINCT FROM %(owner)s::uuid)
    )
    SELECT recorded.usd + held.usd, recorded.images + held.images, held.usd
      FROM recorded, held
"""

_HOLD = """
    INSERT INTO mai.imagen_budget_holds (run_id, variation, backend_instance, owner_user_id,
                                         cost_usd, expires_at)
    VALUES (%(run_id)s, %(variation)s, %(instance)s, %(owner)s::uuid, %(usd)s,
            now() + %(ttl)s)
    ON CONFLICT (run_id, variation) DO UPDATE
       SET backend_instance = EXCLUDED.backend_instance, cost_usd = EXCLUDED.cost_usd,
           owner_user_id = EXCLUDED.owner_user_id, expires_at = EXCLUDED.expires_at
"""


def used_today(
    conn: psycopg.Connection, limit: BudgetLimit, ask: BudgetAsk, start: datetime, end: datetime
) -> Used:
    """What ``limit``'s scope used in ``[start, end)`` and holds now, besides ``ask``'s own."""
    row = conn.execute(
        _USED,
        {
            "start": start,
            "end": end,
            "instance": limit.instance,
            "per_owner": limit.per_owner,
            "owner": ask.owner,
            "run_id": ask.run_id,
            "variations": list(ask.variations),
        },
    ).fetchone()
    if row is None:
        return Used(0.0, 0)
    return Used(float(row[0]), int(row[1]), float(row[2]))


def hold(conn: psycopg.Connection, ask: BudgetAsk) -> None:
    """Hold ``ask``'s images at its price until their calls are recorded (or expire)."""
    for variation in ask.variations:
        conn.execute(
            _HOLD,
            {
                "run_id": ask.run_id,
                "variation": variation,
                "instance": ask.instance,
                "owner": ask.owner,
                "usd": ask.price.usd or 0.0,
                "ttl": HOLD_TTL,
            },
        )


def release_holds(cursor: psycopg.Cursor, run_id: str, variation: int | None = None) -> None:
    """Drop the holds of a run (one variation, or all): its call was recorded, or the step
    failed and a retry checks again. Runs inside the caller's transaction."""
    cursor.execute(
        "DELETE FROM mai.imagen_budget_holds WHERE run_id = %(run_id)s"
        " AND (%(variation)s::integer IS NULL OR variation = %(variation)s)",
        {"run_id": run_id, "variation": variation},
    )


def release_run_holds(connect: Callable[[], psycopg.Connection], run_id: str) -> str:
    """Drop every hold of a run whose generate step failed; returns a note for the log.
    Never raises: a hold left behind only counts until it expires."""
    try:
        with connect() as conn, conn.transaction(), conn.cursor() as cursor:
            release_holds(cursor, run_id)
    except psycopg.Error as error:
        return f"budget holds of run {run_id} not released (they expire): {error}"
    return f"budget holds of run {run_id} released"


def _exceeded(limit: BudgetLimit, ask: BudgetAsk, used: Used, day: str) -> str:
    what = "this image" if ask.images == 1 else f"these {ask.images} images"
    owner = f" for owner {ask.owner or '(none)'}" if limit.per_owner else ""
    held = f" (with ${used.held_usd:.4f} held for calls in progress)" if used.held_usd else ""
    if limit.kind == "usd":
        used_text = f"today's spend ({day} UTC) {limit.scope(ask.instance)}{owner} is "
        used_text += f"${used.usd:.4f}{held} and {what} {'is' if ask.images == 1 else 'are'} "
        used_text += f"estimated at ${ask.usd:.4f}"
    else:
        used_text = (
            f"{used.images} images were made or are in progress today ({day} UTC) "
            f"{limit.scope(ask.instance)}{owner} and this request asks for {ask.images}"
        )
    return (
        f"{limit.label} = {limit.amount_text()} per UTC day would be exceeded: {used_text}; "
        f"backend {ask.instance!r} was not called"
    )


def _owner_public(limit: BudgetLimit, ask: BudgetAsk, used: Used, now: datetime) -> str:
    where = limit.scope(ask.instance)
    if limit.kind == "usd":
        state = f"${used.usd:.2f} spent or in progress today, this request about ${ask.usd:.2f}"
        return (
            f"your limit of {limit.amount_text()} per day {where} would be exceeded ({state}); "
            f"it resets {resets(now)}"
        )
    return (
        f"your limit of {limit.amount_text()} per day {where} is reached ({used.images} made "
        f"or in progress today, this request asks for {ask.images}); it resets {resets(now)}"
    )


def _alert_used_up(
    alerts: Alerts, error: BudgetExceededError, ask: BudgetAsk, now: datetime
) -> None:
    """Tell the operator that one of their limits is used up (an owner's limit: nobody)."""
    limit = error.limit
    if limit.per_owner:
        return
    alerts.event(
        f"budget:{limit.label}",
        f"Daily budget used up: {limit.label}",
        f"{error}. Calls {limit.scope(ask.instance)} are refused until it resets {resets(now)}.",
    )


def check_budget(
    budget: BudgetConfig,
    ask: BudgetAsk,
    connect: Callable[[], psycopg.Connection] | None,
    now: datetime | None = None,
    alerts: Alerts | None = None,
) -> str | None:
    """Hold ``ask``'s images, or raise :class:`BudgetExceededError` if that would pass a
    limit (and alert the operator when the limit is theirs); returns a note for the log, or
    None when no limit applies.

    ``connect`` is None when no database is configured, and ``ask.price.usd`` None when the
    backend's price is unknown: a set budget then cannot be checked, which is an error rather
    than a silent pass.
    """
    limits = limits_for(budget, ask.instance, ask.from_client)
    if not limits:
        return None
    priced = [limit for limit in limits if limit.kind == "usd"]
    if priced and ask.price.usd is None:
        raise BudgetUncheckableError(
            f"{priced[0].label} is set but the price of backend {ask.instance!r} is unknown "
            f"({ask.price.note}), so the budget cannot be checked; backend {ask.instance!r} "
            "was not called"
        )
    if connect is None:
        raise ConfigError(
            f"{limits[0].label} is set but {DATABASE_URL_ENV} is not: today's spend is "
            "unknown, so the budget cannot be checked"
        )
    now = now or datetime.now(UTC)
    start, end = utc_day(now)
    day = f"{start:%Y-%m-%d}"
    notes = []
    try:
        with database_errors(DatabaseStep.BUDGET), connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (BUDGET_LOCK_KEY,))
            for limit in limits:
                used = used_today(conn, limit, ask, start, end)
                asked = ask.usd if limit.kind == "usd" else ask.images
                if used.of(limit.kind) + asked > limit.amount + 1e-9:
                    message = _exceeded(limit, ask, used, day)
                    public = _owner_public(limit, ask, used, now) if limit.per_owner else None
                    raise BudgetExceededError(message, limit, public=public)
                amount = f"${used.usd:.4f}" if limit.kind == "usd" else f"{used.images} images"
                notes.append(
                    f"{limit.label}: {amount} of {limit.amount_text()} "
                    f"{'spent' if limit.kind == 'usd' else 'made'} {limit.scope(ask.instance)}"
                )
            hold(conn, ask)
    except BudgetExceededError as error:
        if alerts is not None:
            _alert_used_up(alerts, error, ask, now)
        raise
    return f"budget ok ({day} UTC): " + "; ".join(notes)
