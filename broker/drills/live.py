"""The live drill's state machine: pure, driven by what the leader sees and a clock.

A live drill (``drills/<id>``, mode ``live``) goes ``PLANNED`` → ``RUNNING`` (its VNFs'
members in the scope are *cut*: ``drill-cuts/<vnf>`` names the sites the failover
controller treats as lost for that VNF alone) → ``FAILING_BACK`` (one VNF at a time:
its cut is lifted, its cut members rejoin and the active role is switched back to the
original site through ``failover-asked/<vnf>``) → ``COMPLETED``; or ``ABORTED`` (operator
abort, ``max_duration_s`` run out, a real site loss: then the cuts are lifted at once and
the VNFs are left to normal failover) or ``FAILED`` (refused at the start, with the reason).

``advance(drill, view, now_ms)`` returns the next drill and the intents to carry out
(``Cut``, ``Lift``, ``Note``); the controller (``broker.controllers.drills``) writes them
with the drill in one fenced transaction (many cuts or lifts: in fenced batches after
it), so a leader killed between steps leaves a drill the next leader resumes exactly
where it stood. Nothing here decides a failover: the
failover controller's machines do, on the cut (invariant 14).

Invariants: a drill's cuts exist only while it is ``RUNNING`` or ``FAILING_BACK`` (every
path into a terminal state lifts what is left — the controller writes many in batches,
before the drill's next step); an isolating drill's quarantines (``Quarantine``: whole
sites closed at the gateways) exist only from its cut until failback begins or it ends
(``Release`` on every such path), and failback lifts no cut before those sites are UP
again; at most one VNF is failing back at a time;
a terminal drill never changes again (abort is idempotent).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PLANNED, RUNNING, FAILING_BACK = "PLANNED", "RUNNING", "FAILING_BACK"
COMPLETED, ABORTED, FAILED = "COMPLETED", "ABORTED", "FAILED"
TERMINAL = frozenset({COMPLETED, ABORTED, FAILED})
ACTIVE_STATES = frozenset({PLANNED, RUNNING, FAILING_BACK})
UNSETTLED = frozenset({"FAILING_OVER", "HEALING", "PENDING", "PLACING"})
FAILBACK_TIMEOUT_MS = 60_000
"""One VNF's failback (rejoin, switch back, roles reported) is given up after this."""


@dataclass(frozen=True, slots=True)
class Target:
    """One VNF of the drill: its members cut (name@site), its roles before the cut."""

    vnf: str
    tenant: str
    cut: tuple[str, ...]
    roles: dict[str, str]
    rpo_s: float = 0.0
    rpo_note: str = "converged"
    estimate_rto_s: float | None = None

    @property
    def active_cut(self) -> str:
        """The site of the cut member that was active ("" when the cut took standbys)."""
        return next((k.split("@")[1] for k in self.cut if self.roles.get(k) == "active"), "")


@dataclass(frozen=True, slots=True)
class Drill:
    id: str
    sites: tuple[str, ...]
    max_duration_s: float
    failback: bool
    hold_s: float = 0.0
    """Stay cut at least this long after the cut (time to test the failed-over service)."""
    isolate: bool = False
    """``isolate: site``: the drill's sites are quarantined whole (their streams closed
    and refused) from the cut until failback begins or the drill ends."""
    state: str = PLANNED
    reason: str = ""
    created_ms: int = 0
    started_ms: int = 0
    measured_ms: int = 0
    ended_ms: int = 0
    targets: tuple[Target, ...] = ()
    queue: tuple[str, ...] = ()
    """VNFs still to fail back, in order."""
    current: str = ""
    current_ms: int = 0
    failed_back: dict[str, str] = field(default_factory=dict)
    """VNF → "" (original roles restored) or why not."""
    failed_back_ms: dict[str, int] = field(default_factory=dict)
    aborting: str = ""
    """Why the drill is ending as ABORTED (set while it still fails back)."""
    at_measure: dict[str, dict[str, str]] = field(default_factory=dict)
    """VNF → its state and reason when the measuring ended (for the report)."""

    def target(self, vnf: str) -> Target:
        return next(t for t in self.targets if t.vnf == vnf)


@dataclass(frozen=True, slots=True)
class VnfView:
    state: str
    roles: Mapping[str, str]
    """name@site → the role the record says."""
    reason: str = ""
    lost_seen: bool = False
    """The failover controller recorded the drill's loss (a member_lost after the cut)."""


@dataclass(frozen=True, slots=True)
class View:
    """What the leader sees for one step."""

    vnfs: Mapping[str, VnfView]
    down: Sequence[str] = ()
    """Sites really DOWN among the drill's sites and its VNFs' members' sites."""
    abort_asked: str = ""
    """Who asked to abort ("" when nobody did)."""
    refusal: str = ""
    """Why a PLANNED drill may not start ("" when it may)."""
    candidates: Sequence[Target] = ()
    """A PLANNED drill's targets (chosen by the controller from the records)."""
    back: bool = True
    """The quarantined sites are UP again (always, for a drill that isolates nothing)."""


@dataclass(frozen=True, slots=True)
class Cut:
    vnf: str
    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Lift:
    """End the cut of ``vnf``: its cut members rejoin; switch the active role to
    ``to_site`` when it is set (a failback), else leave the roles as they are."""

    vnf: str
    rejoin: tuple[str, ...]
    to_site: str = ""


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Isolate ``sites`` whole: gateways close and refuse their streams."""

    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Release:
    """End the quarantine of ``sites`` (their agents reconnect)."""

    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Note:
    """An event for the log (subject: the drill)."""

    kind: str
    message: str


Intent = Cut | Lift | Quarantine | Release | Note


def advance(d: Drill, view: View, now: int) -> tuple[Drill, list[Intent]]:
    """The drill after one look at ``view`` at ``now``; see the module docstring."""
    if d.state == PLANNED:
        return _start(d, view, now)
    if d.state == RUNNING:
        return _running(d, view, now)
    if d.state == FAILING_BACK:
        return _failing_back(d, view, now)
    return d, []


def _start(d: Drill, view: View, now: int) -> tuple[Drill, list[Intent]]:
    why = view.refusal or ("" if view.candidates else "no VNF of the drill has a member in scope")
    if why:
        return _end(d, FAILED, f"refused: {why}", now, [])
    targets = tuple(sorted(view.candidates, key=lambda t: t.vnf))
    d = dataclasses.replace(d, state=RUNNING, started_ms=now, targets=targets)
    intents: list[Intent] = [
        Note("drill.started", f"cut {', '.join(d.sites)} for {len(targets)} VNFs")
    ]
    intents += [Cut(t.vnf, tuple(sorted({k.split("@")[1] for k in t.cut}))) for t in targets]
    if d.isolate:
        intents.append(Quarantine(d.sites))
    return d, intents


def _running(d: Drill, view: View, now: int) -> tuple[Drill, list[Intent]]:
    if view.down:
        d = _measured(d, view, now)
        return _end(d, ABORTED, _real_loss(view), now, _lift_all(d, _vnfs(d)))
    if view.abort_asked:
        return _finish_measuring(_measured(d, view, now), f"aborted by {view.abort_asked}")
    if now - d.started_ms >= d.max_duration_s * 1000:
        why = f"max_duration_s ({d.max_duration_s:g} s) ran out"
        return _finish_measuring(_measured(d, view, now), why)
    held = now - d.started_ms >= d.hold_s * 1000
    if held and all(_settled(view.vnfs.get(t.vnf)) for t in d.targets):
        return _finish_measuring(_measured(d, view, now), "")
    return d, []


def _measured(d: Drill, view: View, now: int) -> Drill:
    seen = {
        t.vnf: {"state": v.state, "reason": v.reason}
        for t in d.targets
        if (v := view.vnfs.get(t.vnf)) is not None
    }
    return dataclasses.replace(d, measured_ms=now, at_measure=seen)


def _settled(v: VnfView | None) -> bool:
    return v is None or (v.lost_seen and v.state not in UNSETTLED)


def _finish_measuring(d: Drill, abort: str) -> tuple[Drill, list[Intent]]:
    now = d.measured_ms
    d = dataclasses.replace(d, aborting=abort)
    if not d.failback:
        state = ABORTED if abort else COMPLETED
        return _end(d, state, abort or "measured; no failback asked", now, _lift_all(d, _vnfs(d)))
    d = dataclasses.replace(d, state=FAILING_BACK, queue=_vnfs(d))
    note = Note("drill.failing_back", abort or "every drill VNF settled; failing back")
    return d, [note, *_release(d)]


def _failing_back(d: Drill, view: View, now: int) -> tuple[Drill, list[Intent]]:
    left = (d.current,) * bool(d.current) + d.queue
    if view.down:
        return _end(d, ABORTED, _real_loss(view), now, _lift_all(d, left))
    if view.abort_asked and not d.aborting:
        reason = f"aborted by {view.abort_asked} during failback"
        return _end(d, ABORTED, reason, now, _lift_all(d, left))
    intents: list[Intent] = []
    if d.current:
        vnf = d.current
        why = _failback_done(d, view.vnfs.get(vnf), now)
        if why is None:
            return d, []
        d = dataclasses.replace(
            d,
            failed_back={**d.failed_back, vnf: why},
            failed_back_ms={**d.failed_back_ms, vnf: now},
            current="",
        )
        intents.append(Note("drill.failed_back", f"{vnf}: {why or 'original roles restored'}"))
    if not d.queue:
        state = ABORTED if d.aborting else COMPLETED
        return _end(d, state, d.aborting or "failed back", now, intents)
    if not view.back:  # the quarantined sites first: a member there rejoins once it is UP
        if now - d.measured_ms < FAILBACK_TIMEOUT_MS:
            return d, intents
        why = "the quarantined sites did not come back UP in time"
        return _end(d, ABORTED, why, now, [*intents, *_lift_all(d, d.queue)])
    t = d.target(d.queue[0])
    d = dataclasses.replace(d, current=t.vnf, current_ms=now, queue=d.queue[1:])
    return d, [*intents, Lift(t.vnf, t.cut, t.active_cut)]


def _failback_done(d: Drill, v: VnfView | None, now: int) -> str | None:
    """Empty once the VNF is ACTIVE in its original roles, why not once it timed out, or
    None while it is still under way."""
    t = d.target(d.current)
    if v is None:
        return "the VNF is gone"
    if v.state == "ACTIVE" and all(v.roles.get(k) == r for k, r in t.roles.items()):
        return ""
    if now - d.current_ms >= FAILBACK_TIMEOUT_MS:
        wrong = sorted(k for k, r in t.roles.items() if v.roles.get(k) != r)
        return f"not restored in time: {v.state}; roles differ at {', '.join(wrong) or 'none'}"
    return None


def _vnfs(d: Drill) -> tuple[str, ...]:
    return tuple(t.vnf for t in d.targets)


def _lift_all(d: Drill, vnfs: Sequence[str]) -> list[Intent]:
    return [Lift(v, d.target(v).cut) for v in vnfs]


def _release(d: Drill) -> list[Intent]:
    return [Release(d.sites)] if d.isolate else []


def _real_loss(view: View) -> str:
    return f"real site loss during the drill: {', '.join(sorted(view.down))} DOWN; normal failover"


def _end(
    d: Drill, state: str, reason: str, now: int, intents: list[Intent]
) -> tuple[Drill, list[Intent]]:
    d = dataclasses.replace(
        d, state=state, reason=reason, ended_ms=now, queue=(), current="", aborting=""
    )
    return d, [*intents, *_release(d), Note(f"drill.{state.lower()}", reason)]


# -- stored form ----------------------------------------------------------------------


def dump(d: Drill) -> dict[str, Any]:
    return dataclasses.asdict(d)


def load(doc: Mapping[str, Any]) -> Drill:
    names = {f.name for f in dataclasses.fields(Drill)}
    data = {k: v for k, v in doc.items() if k in names}
    data["sites"] = tuple(data.get("sites", ()))
    data["queue"] = tuple(data.get("queue", ()))
    data["targets"] = tuple(
        Target(**{**t, "cut": tuple(t["cut"])}) for t in data.get("targets", ())
    )
    return Drill(**data)
