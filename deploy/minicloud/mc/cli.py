"""Command line of the minicloud: up, status, down, env, smoke, logs.

Runs on the system python3 (>= 3.11, stdlib only); the OpenStack services run from their
own venv. ``up`` and ``down`` hold a lock on the state directory, so concurrent callers
(two test sessions) queue instead of racing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path

from . import clouds, layout, procs, services, up
from .layout import Layout

EXIT_NOT_RUNNING = 3


@contextmanager
def locked(state_dir: Path):
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def service_table(lay: Layout) -> list[tuple[str, dict | None]]:
    """(name, pid record or None) of every process the minicloud should run."""
    names = list(services.INFRA_NAMES)
    names += [f"{s.name}/{n}" for s in lay.sites() for n in services.NAMES]
    return [(n, procs.read_pid(lay.run_dir / f"{n.replace('/', '-')}.pid")) for n in names]


def cmd_up(args: argparse.Namespace) -> int:
    with locked(args.state_dir):
        lay = Layout.load(args.state_dir, args.venv, create=True)
        lay.sites_count = args.sites or lay.sites_count or 2
        if not 1 <= lay.sites_count <= layout.MAX_SITES:
            raise SystemExit(f"minicloud: --sites must be 1..{layout.MAX_SITES}")
        say = up.Progress(args.quiet)
        say(f"up: {lay.sites_count} site(s), state {lay.state_dir}, venv {lay.venv}")
        up.up(lay, say)
        say(f"ready: {lay.sites_count} site(s)")
    if not args.quiet:
        print(f"\n  export OS_CLIENT_CONFIG_FILE={lay.clouds_yaml}")
        print("  clouds: " + ", ".join(f"{s.cloud}[-member|-cloudadmin]" for s in lay.sites()))
        print(f"  e.g.   {lay.bin('openstack')} --os-cloud {lay.site(1).cloud} server list")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lay = Layout.load(args.state_dir, args.venv, create=False)
    table = service_table(lay)
    all_up = all(rec for _, rec in table)
    if args.json:
        print(
            json.dumps(
                {
                    "state_dir": str(lay.state_dir),
                    "clouds_yaml": str(lay.clouds_yaml),
                    "venv": str(lay.venv),
                    "all_running": all_up,
                    "ports": lay.ports_table(),
                    "sites": [
                        {
                            "name": s.name,
                            "region": s.region,
                            "cloud": s.cloud,
                            "endpoints": {svc: s.url(svc) for svc in layout.API_SERVICES},
                        }
                        for s in lay.sites()
                    ],
                    "services": {
                        n: {"running": rec is not None, "pid": rec and rec["pid"]}
                        for n, rec in table
                    },
                },
                indent=2,
            )
        )
    else:
        ports = lay.ports_table()
        for name, rec in table:
            state = f"running pid {rec['pid']}" if rec else "STOPPED"
            port = ports.get(name, "")
            print(f"  {name:28} {state:20} {port}")
        print(f"  clouds.yaml: {lay.clouds_yaml}")
    return 0 if all_up else EXIT_NOT_RUNNING


def cmd_down(args: argparse.Namespace) -> int:
    with locked(args.state_dir):
        if not (args.state_dir / "state.json").exists():
            print(f"minicloud: nothing in {args.state_dir}")
            return 0
        lay = Layout.load(args.state_dir, args.venv, create=False)
        # OpenStack services hold nothing worth a graceful wait: all at once, 5 s each;
        # then the message bus, epmd, and the database last (30 s to shut down cleanly)
        batches: dict[int, list[Path]] = {}
        for p in lay.run_dir.glob("*.pid"):
            rank = {"rabbitmq": 1, "epmd": 2, "mariadb": 3}.get(p.stem, 0)
            batches.setdefault(rank, []).append(p)
        stopped: list[str] = []

        def stop(p: Path) -> None:
            if procs.stop(p, timeout=5 if p.stem.startswith("site") else 30):
                stopped.append(p.stem)

        for _, batch in sorted(batches.items()):
            up.parallel([lambda p=p: stop(p) for p in batch], workers=len(batch))
        print(f"minicloud: stopped {len(stopped)} process(es)")
        if args.purge:
            shutil.rmtree(lay.state_dir)
            print(f"minicloud: removed {lay.state_dir} (the services venv {lay.venv} stays)")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    lay = Layout.load(args.state_dir, args.venv, create=False)
    index = int(args.site.removeprefix("site"))
    site = lay.site(index)
    cloud = (
        site.cloud + ({"admin": "", "member": "-member", "cloudadmin": "-cloudadmin"}[args.user])
    )
    if args.openrc:
        auth = clouds.entries(lay, site)[cloud]["auth"]
        for key, value in (
            ("OS_AUTH_URL", auth["auth_url"]),
            ("OS_USERNAME", auth["username"]),
            ("OS_PASSWORD", auth["password"]),
            ("OS_PROJECT_NAME", auth["project_name"]),
            ("OS_USER_DOMAIN_NAME", "Default"),
            ("OS_PROJECT_DOMAIN_NAME", "Default"),
            ("OS_REGION_NAME", site.region),
            ("OS_IDENTITY_API_VERSION", "3"),
        ):
            print(f"export {key}={value}")
    else:
        print(f"export OS_CLIENT_CONFIG_FILE={lay.clouds_yaml}")
        print(f"export OS_CLOUD={cloud}")
    print(f"# openstack CLI: {lay.bin('openstack')}")
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    lay = Layout.load(args.state_dir, args.venv, create=False)
    if not lay.clouds_yaml.exists():
        raise SystemExit(f"minicloud: no {lay.clouds_yaml}: 'up' has not finished")
    tool = layout.VENVTOOLS / "smoke.py"
    env = {
        **layout.venv_env(),
        "OS_CLIENT_CONFIG_FILE": str(lay.clouds_yaml),
        "PYTHONWARNINGS": "ignore",
    }
    t0 = time.monotonic()
    res = subprocess.run(
        [lay.bin("python"), str(tool), f"--site={args.site}", *(s.cloud for s in lay.sites())],
        env=env,
    )
    print(
        f"minicloud smoke: {'passed' if res.returncode == 0 else 'FAILED'} "
        f"in {time.monotonic() - t0:.1f}s"
    )
    return res.returncode


def cmd_logs(args: argparse.Namespace) -> int:
    lay = Layout.load(args.state_dir, args.venv, create=False)
    path = lay.log_dir / f"{args.service.replace('/', '-')}.log"
    print(procs.tail(path, args.lines))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minicloud", description=__doc__.splitlines()[0])
    p.add_argument(
        "--state-dir",
        type=Path,
        default=layout.default_state_dir(),
        help="state directory (default $MINICLOUD_STATE or .state/minicloud)",
    )
    p.add_argument(
        "--venv",
        type=Path,
        default=layout.default_venv_dir(),
        help="root of the services venvs (default $MINICLOUD_VENV or ~/.cache/meridian/...)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("up", help="install what is missing and start K sites (idempotent)")
    s.add_argument(
        "--sites", type=int, default=0, help="number of sites (default: as before, else 2)"
    )
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_up)
    s = sub.add_parser("status", help="which processes run; exit 3 unless all do")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("down", help="stop every process this state dir started")
    s.add_argument("--purge", action="store_true", help="also delete the state dir")
    s.set_defaults(func=cmd_down)
    s = sub.add_parser("env", help="shell exports to use one site")
    s.add_argument("site", help="site1, site2, ... (or 1, 2, ...)")
    s.add_argument("--user", choices=("admin", "member", "cloudadmin"), default="admin")
    s.add_argument("--openrc", action="store_true", help="OS_* variables, no clouds.yaml")
    s.set_defaults(func=cmd_env)
    s = sub.add_parser("smoke", help="flavor + server ACTIVE + delete, via openstacksdk")
    s.add_argument("--site", type=int, default=1)
    s.set_defaults(func=cmd_smoke)
    s = sub.add_parser("logs", help="tail of one service's log, e.g. site1/nova-compute1")
    s.add_argument("service")
    s.add_argument("-n", "--lines", type=int, default=40)
    s.set_defaults(func=cmd_logs)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.state_dir = args.state_dir.resolve()
    args.venv = args.venv.resolve() / layout.constraints_hash()
    try:
        code = args.func(args)
    except procs.StartError as exc:
        print(exc.report(), file=sys.stderr, flush=True)
        os._exit(1)  # do not wait for sibling threads still polling
    except KeyboardInterrupt:
        os._exit(130)
    except BrokenPipeError:  # output piped into head & co
        os._exit(0)
    except Exception:  # a bug, not a service failure: show it, don't wait for threads
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.exit(code)
