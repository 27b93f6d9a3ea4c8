"""What became of a request, in the words of a transparency report.

One pure function, `outcome`, decides it from the facts the gateway records (the request's type
and status, the final decision in the reviews, the production's outcome, the hold's state), and
`/stats` and `lers report` both use it, so the reviewers' chat and the published report never
disagree. `outcomes` loads those facts for every request matching some conditions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.models import Hold, Production, Request, Review

FINAL_DECISIONS = ("approve", "partial", "reject")
# Requests kept without a decision review (data from before reviews were recorded, or imported):
# the decision their status implies. Every state after an approval implies one.
IMPLIED_DECISIONS = {
    "approved": "approve", "partially_approved": "partial", "rejected": "reject",
    "fulfilled": "approve", "preserved": "approve", "extended": "approve", "expired": "approve",
}

# Every outcome, in report order, with its label.
OUTCOMES: dict[str, str] = {
    "produced_in_full": "data produced in full",
    "produced_in_part": "data produced in part",
    "no_data": "approved, no data found",
    "production_pending": "approved, production pending",
    "preserved": "data preserved",
    "preservation_extended": "preservation extended",
    "preservation_expired": "preservation expired",
    "frozen": "assets frozen",
    "freeze_expired": "freeze expired",
    "freeze_released": "freeze released",
    "freeze_release_done": "freeze release carried out",
    "approved_no_action": "approved, nothing to carry out",
    "rejected": "rejected",
    "open": "open (not decided yet)",
    "withdrawn": "withdrawn by the requester",
}
UNDECIDED = ("open", "withdrawn")
# The outcomes a decided request of each group can have (open and withdrawn are counted apart).
GROUP_OUTCOMES: dict[str, tuple[str, ...]] = {
    "data": ("produced_in_full", "produced_in_part", "no_data", "production_pending", "rejected"),
    "preservation": ("preserved", "preservation_extended", "preservation_expired", "approved_no_action",
                     "rejected"),
    "freeze": ("frozen", "freeze_expired", "freeze_released", "freeze_release_done",
               "approved_no_action", "rejected"),
}
PRESERVATION_STATES = {"preserved": "preserved", "extended": "preservation_extended",
                       "expired": "preservation_expired"}
FREEZE_STATES = {"active": "frozen", "expired": "freeze_expired", "released": "freeze_released"}


@dataclass(frozen=True)
class Facts:
    """What the gateway recorded about one request."""

    type: str | None
    status: str
    decision: str | None = None  # the last of approve | partial | reject in the reviews
    production: str | None = None  # Production.outcome: data | no_data
    hold: str | None = None  # Hold.state: active | expired | released


def group(request_type: str | None) -> str:
    """preservation, freeze, or data: the disclosure types (handlers/production.py), and a request
    whose type is still missing (it can only be rejected, withdrawn, or stay open)."""
    if request_type in ("preservation", "preservation_extension"):
        return "preservation"
    if request_type in ("asset_freeze", "freeze_release"):
        return "freeze"
    return "data"


def outcome(facts: Facts) -> str:
    """The one outcome of a request (a key of OUTCOMES).

    A withdrawn request is withdrawn whatever was decided before (nothing was produced or kept);
    an undecided one is open. A data request approved in full or in part is "produced in full" or
    "in part" once its production found data, "no data found" when it found none, and "production
    pending" until then. A preservation is preserved, extended or expired; an asset freeze is
    frozen, expired or released; an approved freeze release has been carried out.
    """
    if facts.status == "withdrawn":
        return "withdrawn"
    decision = facts.decision or IMPLIED_DECISIONS.get(facts.status)
    if decision is None:
        return "open"
    if decision == "reject":
        return "rejected"
    kind = group(facts.type)
    if kind == "data":
        if facts.production == "no_data":
            return "no_data"
        if facts.production == "data":
            return "produced_in_part" if decision == "partial" else "produced_in_full"
        return "production_pending"
    if kind == "preservation":
        return PRESERVATION_STATES.get(facts.status, "approved_no_action")
    if facts.type == "freeze_release":
        return "freeze_release_done"
    return FREEZE_STATES.get(facts.hold or "", "approved_no_action")


async def outcomes(session: AsyncSession, *where: Any) -> dict[int, str]:
    """The outcome of every request matching `where` (conditions on Request), by request id."""
    requests = await session.execute(select(Request.id, Request.type, Request.status).where(*where))
    decisions = {request_id: action for request_id, action in await session.execute(
        select(Review.request_id, Review.action).join(Request, Review.request_id == Request.id)
        .where(Review.action.in_(FINAL_DECISIONS), *where).order_by(Review.id))}
    productions = {request_id: produced for request_id, produced in await session.execute(
        select(Production.request_id, Production.outcome)
        .join(Request, Production.request_id == Request.id).where(*where))}
    holds = {request_id: state for request_id, state in await session.execute(
        select(Hold.request_id, Hold.state).join(Request, Hold.request_id == Request.id).where(*where))}
    return {r.id: outcome(Facts(r.type, r.status, decisions.get(r.id), productions.get(r.id),
                                holds.get(r.id)))
            for r in requests}
