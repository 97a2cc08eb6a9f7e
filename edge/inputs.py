"""What a client may send a node, checked before any work is done: ids, the recommendation
query, event times and body sizes. Every refusal is a `Problem` naming the field, in the shape
FastAPI uses for its own 422 answers (`{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`),
and never echoes the input back (an echoed lone surrogate or NaN cannot even be encoded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

MAX_ID = 128  # characters in any id
MAX_K = 100
MAX_EXCLUDE = 100
MAX_RECENT = 50
MAX_TIME = 40  # characters of an ISO 8601 time
MAX_VALUE = 1e9  # what one event may say it was worth
MAX_QUERY_BYTES = 64 * 2**10
MAX_EVENTS_BODY = 2**20  # one batch of MAX_BATCH events with long ids fits in a quarter of it
MAX_SMALL_BODY = 64 * 2**10  # any other request's body, except a bundle upload
MAX_BATCH = 1000
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"  # no control characters (C0, DEL, C1)
EARLIEST_MARGIN = timedelta(days=1)  # events may be dated this much before the bundle's data begins
CLOCK_SKEW = timedelta(minutes=10)  # ... and this much after the node's clock
_ID = re.compile(ID_PATTERN)
_K = re.compile(r"^[0-9]{1,3}$")


@dataclass(frozen=True)
class Problem:
    """One refused field: where (`loc`, as FastAPI writes it), why, and a machine-readable type."""

    loc: tuple
    msg: str
    type: str

    def detail(self) -> dict:
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


def id_problem(value: str, loc: tuple) -> Problem | None:
    if not value:
        return Problem(loc, "must not be empty", "string_too_short")
    if len(value) > MAX_ID:
        return Problem(loc, f"at most {MAX_ID} characters", "string_too_long")
    if not _ID.match(value):
        return Problem(loc, "control characters are not allowed in ids", "string_pattern_mismatch")
    return None


@dataclass(frozen=True)
class RecommendationQuery:
    user_id: str
    store_id: str
    k: int
    exclude: tuple[str, ...]
    recent: tuple[str, ...]
    at: float | None = None  # Unix seconds the answer is for (None: the node's clock)


def parse_recommendation_query(query_string: bytes) -> RecommendationQuery | list[Problem]:
    """The query of GET /v1/recommendations, strictly: user_id and store_id exactly once, k at most
    once as plain digits 1..MAX_K, every id valid, `at` (the time the answer is for: ISO 8601, naive
    is UTC; for backtests and batch clients) at most once and not after the node's clock plus the
    allowed skew. Unknown parameters are ignored."""
    if len(query_string) > MAX_QUERY_BYTES:
        return [Problem(("query",), f"query string longer than {MAX_QUERY_BYTES} bytes", "too_long")]
    values: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        values.setdefault(key, []).append(value)
    problems = []
    for name in ("user_id", "store_id"):
        given = values.get(name, [])
        if len(given) != 1:
            problems.append(
                Problem(
                    ("query", name),
                    "required exactly once" if given else "required",
                    "missing" if not given else "repeated",
                )
            )
        elif problem := id_problem(given[0], ("query", name)):
            problems.append(problem)
    k = values.get("k", ["10"])
    if len(k) != 1 or not _K.match(k[0]) or not 1 <= int(k[0]) <= MAX_K:
        problems.append(Problem(("query", "k"), f"one whole number from 1 to {MAX_K}", "int_parsing"))
    for name, most in (("exclude", MAX_EXCLUDE), ("recent", MAX_RECENT)):
        given = values.get(name, [])
        if len(given) > most:
            problems.append(Problem(("query", name), f"at most {most} values", "too_long"))
        problems += [p for j, v in enumerate(given) if (p := id_problem(v, ("query", name, j)))][:5]
    at = values.get("at", [])
    moment, at_problem = _request_time(at)
    if at_problem:
        problems.append(at_problem)
    if problems:
        return problems
    return RecommendationQuery(
        values["user_id"][0],
        values["store_id"][0],
        int(k[0]),
        tuple(values.get("exclude", ())),
        tuple(values.get("recent", ())),
        moment,
    )


def _request_time(given: list[str]) -> tuple[float | None, Problem | None]:
    """The `at` query parameter as Unix seconds (None when absent), or why it is refused."""
    loc = ("query", "at")
    if not given:
        return None, None
    if len(given) > 1:
        return None, Problem(loc, "at most once", "repeated")
    try:
        if len(given[0]) > MAX_TIME:
            raise ValueError
        moment = datetime.fromisoformat(given[0])
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None, Problem(loc, "an ISO 8601 time, e.g. 2017-12-01T10:30:00Z", "datetime_parsing")
    if problem := after_clock(moment, loc):
        return None, problem
    return moment.timestamp(), None


def after_clock(moment: datetime, loc: tuple) -> Problem | None:
    """Why an aware `moment` is refused for lying after the node's clock plus the allowed skew, or None."""
    latest = datetime.now(UTC) + CLOCK_SKEW
    if moment > latest:
        return Problem(
            loc,
            f"after the node's clock plus {CLOCK_SKEW} ({latest.isoformat(timespec='seconds')})",
            "datetime_in_future",
        )
    return None


@dataclass(frozen=True)
class TimeWindow:
    """The times an event may carry: from the bundle's first data day minus a margin to the node's
    clock plus the allowed skew."""

    earliest: datetime  # aware, UTC

    @classmethod
    def for_origin(cls, origin: datetime) -> TimeWindow:
        """origin: the bundle's day 0 (naive UTC or aware)."""
        aware = origin if origin.tzinfo else origin.replace(tzinfo=UTC)
        return cls(aware - EARLIEST_MARGIN)

    def problem(self, moment: datetime, loc: tuple) -> Problem | None:
        """None when `moment` (naive: UTC) is inside the window, else why not."""
        try:
            moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        except (OverflowError, ValueError):
            return Problem(loc, "not a representable time", "datetime_out_of_range")
        if problem := after_clock(moment, loc):
            return problem
        if moment < self.earliest:
            return Problem(
                loc,
                f"before this node's data begins ({self.earliest.isoformat(timespec='seconds')})",
                "datetime_too_old",
            )
        return None
