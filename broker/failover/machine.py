"""The failover state machine of one VNF: pure, driven by events and a clock.

``step(vnf, event, now_ms)`` returns the VNF's next state and the actions the controller
must carry out: role changes (written as fenced desired state), re-placements, deletions,
usage to give back, and events to record. The VNF's phase is derived from its members
(``phase_of``), so every phase change is exactly one recorded transition.

A member lost (its site or host down, its server gone or failed for good) is acted on once
its loss outlasts ``grace_s`` (a return within it changes nothing). Acting *condemns* the
member: its wanted role becomes standby at once (so the desired state its site resumes
with carries the demotion), the best ready standby is promoted (``promote: auto``), and a
replacement is asked for (``restore: auto``) that joins as standby. The condemned member
is deleted only once its replacement is READY, and its usage given back only once its
site confirms the deletion (or the operator forgets the site).

Invariants: in an active-standby group at most one member is wanted active, and a
standby is promoted only when no other live member is wanted active — a planned switchover
waits for the old active's demotion to be reported applied; a member is deleted only after
its replacement is READY (or when it never served); one loss starts at most one failover:
a condemned member's returns and new losses change nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

# The vocabulary (members, events, actions) lives in model.py; re-exported here so
# callers keep writing ``machine.Vnf``, ``machine.Lost``, ...
from broker.failover.model import (
    Action as Action,
    ACTIVE as ACTIVE,
    Back as Back,
    Delete as Delete,
    Deleted as Deleted,
    Drain as Drain,
    Ev as Ev,
    Event as Event,
    Failover as Failover,
    Heal as Heal,
    Lost as Lost,
    Member as Member,
    Observed as Observed,
    Outcome as Outcome,
    Phase as Phase,
    Placed as Placed,
    PlaceFailed as PlaceFailed,
    Policy as Policy,
    Record as Record,
    Refused as Refused,
    Rejoin as Rejoin,
    Release as Release,
    Replace as Replace,
    SetRole as SetRole,
    STANDBY as STANDBY,
    Tick as Tick,
    Vnf as Vnf,
)


# -- the machine ----------------------------------------------------------------------


class _Run:
    """One step's working copy: members by key, and the actions in order."""

    def __init__(self, vnf: Vnf, now_ms: int) -> None:
        self.vnf, self.now = vnf, now_ms
        self.members = {m.key: m for m in vnf.members}
        self.actions: list[Action] = []
        self.promote_after = vnf.promote_after

    def put(self, m: Member) -> None:
        self.members[m.key] = m

    def record(self, ev: Ev, reason: str) -> None:
        self.actions.append(Record(ev, reason, self.now))

    def set_role(self, m: Member, role: str) -> Member:
        m = dataclasses.replace(m, role=role)
        self.put(m)
        self.actions.append(SetRole(m.key, role))
        return m

    def live(self) -> list[Member]:
        return [m for m in self.members.values() if not m.condemned]

    def others_wanted_active(self, key: str) -> list[Member]:
        return [m for m in self.live() if m.role == ACTIVE and m.key != key]

    def done(self) -> Outcome:
        members = tuple(self.members.values())
        vnf = dataclasses.replace(self.vnf, members=members, promote_after=self.promote_after)
        phase, reason = phase_of(vnf)
        if phase is not self.vnf.phase:
            self.actions.extend(_transition(self.vnf.phase, phase, reason, self.now))
        return Outcome(dataclasses.replace(vnf, phase=phase, reason=reason), tuple(self.actions))


def step(vnf: Vnf, event: Event, now_ms: int) -> Outcome:
    """The VNF after ``event`` at ``now_ms``, and what to do about it."""
    run = _Run(vnf, now_ms)
    if isinstance(event, Lost):
        _lost(run, event)
    elif isinstance(event, Back):
        _back(run, event.key)
    elif isinstance(event, Observed):
        _observed(run, event)
    elif isinstance(event, Placed):
        _placed(run, event)
    elif isinstance(event, PlaceFailed):
        _place_failed(run, event)
    elif isinstance(event, Deleted):
        _deleted(run, event.key)
    elif isinstance(event, Failover):
        _switchover(run, event.to_site)
    elif isinstance(event, Heal):
        _heal(run)
    elif isinstance(event, Drain):
        _drain(run, event.site)
    elif isinstance(event, Rejoin):
        _rejoin(run, event.key)
    _expire(run)
    _ensure_active(run)
    return run.done()


def _lost(run: _Run, event: Lost) -> None:
    m = run.members.get(event.key)
    if m is None or m.condemned or m.lost_ms is not None:
        return  # unknown, already acted on (a flap), or its grace already runs
    run.put(dataclasses.replace(m, lost_ms=run.now, lost_reason=event.reason, gone=event.gone))


def _rejoin(run: _Run, key: str) -> None:
    """A drill's cut member comes back as a live standby (its demotion stays): its loss
    was simulated. Nothing changes once a replacement was placed or its deletion began."""
    m = run.members.get(key)
    if m is None or m.replaced_by or m.deleting or m.released:
        return
    run.put(
        dataclasses.replace(
            m,
            condemned="",
            lost_ms=None,
            lost_reason="",
            gone=False,
            replace_wanted=False,
            refused="",
        )
    )


def _back(run: _Run, key: str) -> None:
    m = run.members.get(key)
    if m is None or m.condemned:
        return  # a condemned member stays condemned: one loss, one failover
    run.put(dataclasses.replace(m, lost_ms=None, lost_reason="", gone=False))


def _expire(run: _Run) -> None:
    """Act on losses whose grace ran out, on replacements past their ready deadline, and
    on refused replacements whose retry time came (a brief DOWN blip, freed capacity)."""
    pol = run.vnf.policy
    for m in list(run.members.values()):
        if m.condemned:
            if _retry_due(run, m):
                _want_replacement(run, m, m.replace_role or m.role)
            continue
        if m.lost_ms is not None and run.now - m.lost_ms >= pol.grace_ms:
            _condemn(run, m, f"lost: {m.lost_reason}")
        elif not m.ready and m.placed_ms and run.now - m.placed_ms >= pol.ready_timeout_ms:
            _timed_out(run, m)


def _retry_due(run: _Run, m: Member) -> bool:
    """A refused replacement still wanted (as ``heal`` judges it; a member given up after
    its attempts waits for the operator's heal), its retry time come."""
    return (
        bool(m.refused)
        and m.condemned != "failed"
        and not (m.replace_wanted or m.replaced_by)
        and run.now - m.refused_ms >= run.vnf.policy.retry_ms
    )


def _ensure_active(run: _Run) -> None:
    """``promote: auto``: when no live member is wanted active, promote the best standby."""
    pol = run.vnf.policy
    if pol.promote != "auto" or not _has_standby_model(run) or run.promote_after:
        return
    if not run.others_wanted_active(""):
        _promote_best(run)


def _condemn(run: _Run, m: Member, why: str) -> None:
    """Act on the loss of ``m``: demote it and ask for its replacement."""
    was_active = m.role == ACTIVE
    m = dataclasses.replace(m, condemned=why)
    run.put(m)
    run.record(Ev.MEMBER_LOST, f"member {m.name} at {m.site}: {why}")
    if was_active:
        m = run.set_role(m, STANDBY)  # the lost site resumes with this demotion
    if run.promote_after == m.key:
        run.promote_after = ""  # the switchover's target is lost: promote another
    _finish_switchover(run)
    role = STANDBY if _has_standby_model(run) else ACTIVE
    _want_replacement(run, m, role)


def _has_standby_model(run: _Run) -> bool:
    return run.vnf.policy.model in ("active-standby", "n+k")


def _want_replacement(run: _Run, m: Member, role: str, *, manual: bool = False) -> None:
    """Ask for ``m``'s replacement away from its site and host — except a server gone
    from a site and host that still serve, which may be built there again (``_placed``:
    the same member, a new generation of its server)."""
    if run.vnf.policy.restore != "auto" and not manual:
        return
    rebuild = m.gone and m.condemned.startswith("lost")  # (a drain moves it off all the same)
    avoid_sites = tuple(sorted({*m.avoid_sites, *(() if rebuild else (m.site,))}))
    avoid_hosts = tuple(sorted({*m.avoid_hosts, *(() if rebuild else (m.host,))} - {""}))
    m = dataclasses.replace(
        m,
        replace_wanted=True,
        refused="",
        replace_role=role,
        avoid_sites=avoid_sites,
        avoid_hosts=avoid_hosts,
    )
    run.put(m)
    run.actions.append(Replace(m.key, role, avoid_sites, avoid_hosts))


def _promote_best(run: _Run, to_site: str = "") -> Member | None:
    """Promote the best serving standby (at ``to_site`` when given)."""
    choices = [
        m
        for m in run.live()
        if m.role == STANDBY and m.serving and (not to_site or m.site == to_site)
    ]
    if not choices or run.others_wanted_active(""):
        return None  # never two wanted active
    return run.set_role(min(choices, key=lambda m: (m.name, m.site)), ACTIVE)


def _observed(run: _Run, event: Observed) -> None:
    m = run.members.get(event.key)
    if m is None:
        return
    m = dataclasses.replace(m, ready=event.ready, applied_role=event.role or m.applied_role)
    run.put(m)
    if event.ready and not m.condemned:
        for old in list(run.members.values()):
            if old.replaced_by != m.key:
                continue
            if old.released:
                del run.members[old.key]
            elif not old.deleting:
                run.put(dataclasses.replace(old, deleting=True))
                run.actions.append(Delete(old.key))
    _finish_switchover(run)


def _finish_switchover(run: _Run) -> None:
    """Once no reachable member reports the active role, promote the switchover's target."""
    if run.promote_after and _demoted(run):
        target = run.members.get(run.promote_after)
        run.promote_after = ""
        if target is not None and target.serving and not run.others_wanted_active(""):
            run.set_role(target, ACTIVE)


def _demoted(run: _Run) -> bool:
    """No reachable member still reports the active role."""
    return all(
        m.applied_role != ACTIVE
        for m in run.members.values()
        if m.lost_ms is None and m.ready and not m.released
    )


def _placed(run: _Run, event: Placed) -> None:
    old = run.members.get(event.for_key)
    if old is None or not old.replace_wanted:
        return
    timed_out = old.condemned == "timeout"
    new = Member(
        old.name,
        event.site,
        event.host,
        role=old.replace_role or STANDBY,
        placed_ms=run.now,
        attempts=old.attempts + 1 if timed_out else 1,
        avoid_hosts=old.avoid_hosts if timed_out else (),
        avoid_sites=old.avoid_sites if timed_out else (),
    )
    if new.key == old.key:
        run.put(new)  # another host at the same site: the same server, a new generation
        return
    old = dataclasses.replace(old, replace_wanted=False, replaced_by=new.key)
    run.put(old)
    run.put(new)
    if timed_out and not old.deleting:
        run.put(dataclasses.replace(old, deleting=True))  # it never served: no need to wait
        run.actions.append(Delete(old.key))


def _place_failed(run: _Run, event: PlaceFailed) -> None:
    old = run.members.get(event.for_key)
    if old is None or not old.replace_wanted:
        return
    refused = dataclasses.replace(old, replace_wanted=False, refused=event.reason)
    run.put(dataclasses.replace(refused, refused_ms=run.now))
    run.record(Ev.DEGRADED, f"no replacement for {old.name}: {event.reason}")


def _timed_out(run: _Run, m: Member) -> None:
    """A member not READY by its deadline: re-place it (its host, then its site excluded)."""
    if m.attempts >= run.vnf.policy.max_attempts:
        run.put(dataclasses.replace(m, condemned="failed", placed_ms=0))
        run.record(
            Ev.MEMBER_LOST, f"member {m.name} at {m.site}: not READY after {m.attempts} attempts"
        )
        return
    avoid_hosts = tuple(sorted({*m.avoid_hosts, m.host} - {""}))
    avoid_sites = m.avoid_sites if m.attempts < 2 else tuple(sorted({*m.avoid_sites, m.site}))
    m = dataclasses.replace(
        m,
        condemned="timeout",
        replace_wanted=True,
        replace_role=m.role,
        avoid_hosts=avoid_hosts,
        avoid_sites=avoid_sites,
    )
    run.put(m)
    run.record(Ev.MEMBER_LOST, f"member {m.name} at {m.site}: not READY in time")
    run.actions.append(Replace(m.key, m.role, avoid_sites, avoid_hosts))


def _deleted(run: _Run, key: str) -> None:
    m = run.members.get(key)
    if m is None or not m.condemned or m.released:
        return
    run.actions.append(Release(key))
    replacement = run.members.get(m.replaced_by)
    if m.replace_wanted or (replacement is not None and not replacement.ready):
        run.put(dataclasses.replace(m, released=True))  # kept until its replacement is READY
    else:
        del run.members[key]


def _switchover(run: _Run, to_site: str) -> None:
    if not _has_standby_model(run):
        raise Refused(f"a {run.vnf.policy.model} VNF has no standby to switch over to")
    if run.promote_after:
        raise Refused("a switchover is already under way")
    standby = [
        m
        for m in run.live()
        if m.role == STANDBY and m.serving and (not to_site or m.site == to_site)
    ]
    if not standby:
        where = f" at {to_site}" if to_site else ""
        raise Refused(f"no ready standby{where} to promote")
    for a in run.others_wanted_active(""):
        run.set_role(a, STANDBY)  # demote first; promote when it reports the demotion
    target = min(standby, key=lambda m: (m.name, m.site))
    if _demoted(run):
        run.set_role(target, ACTIVE)
    else:
        run.promote_after = target.key


def _heal(run: _Run) -> None:
    wanting = [
        m
        for m in run.members.values()
        if m.condemned and not m.replace_wanted and not m.replaced_by
    ]
    if not wanting:
        raise Refused("nothing to heal: every lost member is replaced or being replaced")
    for m in wanting:
        if m.condemned == "failed":
            m = dataclasses.replace(m, attempts=0, condemned="timeout")
            run.put(m)
        _want_replacement(run, m, m.replace_role or m.role, manual=True)


def _drain(run: _Run, site: str) -> None:
    on_site = [m for m in run.live() if m.site == site]
    if any(m.role == ACTIVE for m in on_site) and _has_standby_model(run):
        try:
            _switchover(run, "")
        except Refused:
            pass  # no standby elsewhere: it serves until its replacement can take over
    for m in on_site:
        m = dataclasses.replace(run.members[m.key], condemned="drain")
        run.put(m)
        _want_replacement(run, m, STANDBY if _has_standby_model(run) else m.role, manual=True)


# -- phases ---------------------------------------------------------------------------


def phase_of(vnf: Vnf) -> tuple[Phase, str]:
    """The phase the members put the VNF in, and why."""
    live = [m for m in vnf.members if not m.condemned]
    serving_active = [m for m in live if m.serving and m.role == ACTIVE]
    promoting = vnf.promote_after or any(
        m.role == ACTIVE and m.ready and m.applied_role != ACTIVE for m in live
    )
    healing = [m for m in vnf.members if m.replace_wanted] + [
        m for m in live if not m.ready and m.lost_ms is None
    ]
    reduced = len([m for m in live if m.serving]) < vnf.wanted
    in_grace = [m for m in live if m.lost_ms is not None]
    if promoting:
        return Phase.FAILING_OVER, "promoting a standby"
    if healing:
        return Phase.HEALING, f"restoring {', '.join(sorted({m.name for m in healing}))}"
    if in_grace:
        names = ", ".join(sorted(m.name for m in in_grace))
        return Phase.DEGRADED, f"lost, within grace: {names}"
    if not serving_active and any(m.serving for m in live):
        return Phase.DEGRADED, "no active member: a standby awaits promotion (promote: manual)"
    if not serving_active:
        return Phase.FAILED, "no member serves and none is being restored"
    if reduced:
        lost = sorted(
            m.name + (f" (no replacement: {m.refused})" if m.refused else "")
            for m in vnf.members
            if m.condemned and not m.replaced_by
        )
        return Phase.DEGRADED, f"redundancy reduced: {', '.join(lost) or 'members down'}"
    return Phase.ACTIVE, ""


def _transition(old: Phase, new: Phase, reason: str, now: int) -> Iterable[Record]:
    if old is Phase.FAILING_OVER:
        yield Record(Ev.FAILOVER_COMPLETED, "the promoted member reports its role", now)
    if new is Phase.FAILING_OVER:
        yield Record(Ev.FAILOVER_STARTED, reason, now)
    elif new is Phase.ACTIVE:
        if old in (Phase.HEALING, Phase.DEGRADED, Phase.FAILED):
            yield Record(Ev.HEALED, "redundancy restored", now)
        yield Record(Ev.ACTIVE, "", now)
    elif new is Phase.FAILED:
        yield Record(Ev.FAILED, reason, now)
    elif old is Phase.ACTIVE or new is Phase.DEGRADED:
        yield Record(Ev.DEGRADED, reason, now)
