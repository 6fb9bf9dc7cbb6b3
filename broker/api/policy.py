"""The role policy: which Keystone grants become which Meridian roles, and where.

Meridian has four roles. ``admin`` is federation-wide (sites, images, limits, PKI);
``operator`` reads the federation and acts on any tenant's VNFs and reservations, but
only at the sites of its scope (regions and/or sites); ``member`` manages its own
project's VNFs and reservations; ``reader`` only reads what its project may see. What a
route needs is in ``deps`` (the only place role sets are written down); this module
decides what a caller *has*.

The policy is a TOML file (``api.policy_file``; ``deploy/policy/policy.toml`` documents
every key with its default). Empty: the defaults below, which are:

- Keystone ``admin``/``meridian-admin`` → admin, ``operator``/``meridian-operator`` →
  operator, ``member``/``_member_``/``meridian-member`` → member, ``reader``/
  ``meridian-reader`` → reader; any other Keystone role grants nothing;
- ``admin`` is federation-wide only in ``admin_project`` (default ``admin``, Keystone's
  bootstrap project; matched by id or name). In any other project it is that project's
  ``member``: a project's own admin does not become the carrier's;
- ``operator`` acts federation-wide in ``admin_project``, at its ``[operators.<project>]``
  scope in a listed project, and elsewhere is only a ``reader``: an operator grant
  needs a place.

Invariant: nothing here widens a grant — every rule maps a Keystone role to at most the
Meridian role of the same name, and a missing or unknown entry grants less, never more.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from broker import errors

Role = Literal["admin", "operator", "member", "reader"]
ROLES: tuple[Role, ...] = ("admin", "operator", "member", "reader")
ANY = "*"


@dataclass(frozen=True, slots=True)
class Scope:
    """Where an operator may act: every site of ``regions``, and each of ``sites``.

    ``regions = {"*"}`` is everywhere (admins, and operators of the admin project).
    """

    regions: frozenset[str] = frozenset({ANY})
    sites: frozenset[str] = frozenset()

    @property
    def everywhere(self) -> bool:
        return ANY in self.regions

    def covers(self, site: str, region: str) -> bool:
        return self.everywhere or region in self.regions or site in self.sites

    def describe(self) -> str:
        if self.everywhere:
            return "everywhere"
        parts = [f"region {r}" for r in sorted(self.regions)]
        parts += [f"site {s}" for s in sorted(self.sites)]
        return ", ".join(parts) or "nowhere"


EVERYWHERE = Scope()

DEFAULT_ROLES: Mapping[str, Role] = {
    "admin": "admin",
    "meridian-admin": "admin",
    "operator": "operator",
    "meridian-operator": "operator",
    "member": "member",
    "_member_": "member",
    "meridian-member": "member",
    "reader": "reader",
    "meridian-reader": "reader",
}
DEFAULT_ADMIN_PROJECT = "admin"


@dataclass(frozen=True, slots=True)
class Grant:
    roles: frozenset[Role]
    scope: Scope = EVERYWHERE


@dataclass(frozen=True, slots=True)
class Policy:
    roles: Mapping[str, Role] = field(default_factory=lambda: dict(DEFAULT_ROLES))
    """Keystone role name (lower-case) -> Meridian role."""
    admin_project: str = DEFAULT_ADMIN_PROJECT
    """Keystone project (id or name) whose admins and operators are federation-wide."""
    operators: Mapping[str, Scope] = field(default_factory=dict)
    """Keystone project (id or name) -> where that project's operators may act."""

    def grant(self, project_id: str, project_name: str, keystone_roles: Iterable[str]) -> Grant:
        """The Meridian roles (and operator scope) of a token with these Keystone roles."""
        mapped = {self.roles[n.lower()] for n in keystone_roles if n.lower() in self.roles}
        home = bool(self.admin_project) and self.admin_project in (project_id, project_name)
        if "admin" in mapped and not home:
            mapped.discard("admin")
            mapped.add("member")
        scope = EVERYWHERE
        if "operator" in mapped and not home:
            found = self.operators.get(project_id) or self.operators.get(project_name)
            if found is None:
                mapped.discard("operator")
                mapped.add("reader")
            else:
                scope = found
        return Grant(frozenset(mapped), scope)


def _strings(value: Any, where: str, problems: list[str]) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: must be a list of non-empty strings")
        return frozenset()
    return frozenset(value)


def parse(data: Mapping[str, Any], source: str = "policy") -> Policy:
    """A ``Policy`` from the file's TOML table; ``SettingsError`` lists every problem."""
    problems: list[str] = []
    unknown = sorted(set(data) - {"admin_project", "roles", "operators"})
    problems += [f"{source}: {k}: unknown key (admin_project, roles, operators)" for k in unknown]
    admin_project = data.get("admin_project", DEFAULT_ADMIN_PROJECT)
    if not isinstance(admin_project, str):
        problems.append(f"{source}: admin_project: must be a string")
        admin_project = DEFAULT_ADMIN_PROJECT
    roles: dict[str, Role] = {}
    raw_roles = data.get("roles", DEFAULT_ROLES)
    for name, role in dict(raw_roles).items() if isinstance(raw_roles, Mapping) else ():
        if role not in ROLES:
            problems.append(f"{source}: roles.{name}: {role!r} is not one of {', '.join(ROLES)}")
        else:
            roles[str(name).lower()] = cast(Role, role)
    if not isinstance(raw_roles, Mapping):
        problems.append(f"{source}: roles: must be a table of Keystone role = Meridian role")
    operators: dict[str, Scope] = {}
    raw_ops = data.get("operators", {})
    if not isinstance(raw_ops, Mapping):
        problems.append(f"{source}: operators: must be a table of projects")
        raw_ops = {}
    for project, entry in raw_ops.items():
        where = f"{source}: operators.{project}"
        if not isinstance(entry, Mapping) or set(entry) - {"regions", "sites"}:
            problems.append(f"{where}: must be a table with regions and/or sites")
            continue
        regions = _strings(entry.get("regions", []), f"{where}.regions", problems)
        sites = _strings(entry.get("sites", []), f"{where}.sites", problems)
        if not regions and not sites:
            problems.append(f"{where}: name at least one region or site ('*': everywhere)")
        operators[str(project)] = Scope(regions, sites)
    if problems:
        raise errors.SettingsError(problems)
    return Policy(roles=roles, admin_project=admin_project, operators=operators)


def load(path: str | Path | None) -> Policy:
    """The policy in ``path`` (TOML), or the defaults when ``path`` is empty."""
    if not path:
        return Policy()
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise errors.SettingsError([f"api.policy_file: cannot read {path}: {exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise errors.SettingsError([f"api.policy_file: {path} is not TOML: {exc}"]) from exc
    return parse(data, f"api.policy_file {path}")
