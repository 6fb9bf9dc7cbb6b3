"""The long-running processes of one site, as ``procs.Service`` values.

APIs run as WSGI modules under uWSGI on their own loopback port (one worker, four threads,
``Connection: close`` so clients never reuse a connection uWSGI already dropped). The RPC
side runs as the projects' own console scripts. Order matters and is the caller's:
keystone first; the other APIs, neutron-rpc-server and nova's conductor and scheduler
next; the two nova-computes last.
"""

from __future__ import annotations

from pathlib import Path

from . import configs, layout
from .layout import Layout, Site
from .procs import Service

# (service, WSGI module, config env)
APIS = {
    "keystone": (
        "keystone.wsgi.api",
        lambda d: {"OS_KEYSTONE_CONFIG_DIR": str(d), "OS_KEYSTONE_CONFIG_FILES": "keystone.conf"},
    ),
    "glance": ("glance.wsgi.api", lambda d: {"OS_GLANCE_CONFIG_DIR": str(d)}),
    "placement": ("placement.wsgi.api", lambda d: {"OS_PLACEMENT_CONFIG_DIR": str(d)}),
    "neutron": (
        "neutron.wsgi.api",
        lambda d: {
            "OS_NEUTRON_CONFIG_DIR": str(d),
            "OS_NEUTRON_CONFIG_FILES": "neutron.conf;ml2_conf.ini",
        },
    ),
    # the first file is taken as the paste file
    "nova": (
        "nova.wsgi.osapi_compute",
        lambda d: {"OS_NOVA_CONFIG_DIR": str(d), "OS_NOVA_CONFIG_FILES": "api-paste.ini;nova.conf"},
    ),
}


# one worker with four threads is plenty for tests and keeps memory down
UWSGI_FLAGS = (
    "--master --processes 1 --threads 4 --enable-threads --lazy-apps --need-app "
    "--die-on-term --buffer-size 65535 --wsgi-disable-file-wrapper --http-auto-chunked "
    "--chunked-input-limit 4096000 --disable-logging --log-4xx --log-5xx"
).split()


def _uwsgi(lay: Layout, site: Site, service: str, files: list[Path]) -> Service:
    module, env_of = APIS[service]
    argv = [
        *(lay.bin("uwsgi"), "--http-socket", f"{layout.HOST}:{site.port(service)}"),
        *("--module", f"{module}:application", "--virtualenv", str(lay.venv)),
        *("--add-header", "Connection: close", *UWSGI_FLAGS),
    ]
    return Service(
        f"{site.name}/{service}",
        argv,
        lay.run_dir,
        lay.log_dir,
        env=env_of(configs.etc(site, service)),
        config_files=files,
        port=site.port(service),
        http=True,
        timeout=300,  # nova-api imports for minutes on a 2-core machine at load 20
    )


def _script(lay: Layout, site: Site, name: str, argv: list[str], files: list[Path]) -> Service:
    return Service(
        f"{site.name}/{name}",
        [lay.bin(argv[0]), *argv[1:]],
        lay.run_dir,
        lay.log_dir,
        config_files=files,
        settle=4.0,
    )


def keystone(lay: Layout, site: Site, files: dict[str, list[Path]]) -> Service:
    return _uwsgi(lay, site, "keystone", files["keystone"])


def control(lay: Layout, site: Site, files: dict[str, list[Path]]) -> list[Service]:
    """APIs other than keystone, neutron-rpc-server, nova-conductor, nova-scheduler."""
    neutron_conf = [f"--config-file={p}" for p in files["neutron"][:2]]
    nova_conf = f"--config-file={configs.etc(site, 'nova') / 'nova.conf'}"
    nova_files = files["nova"][:2]
    return [
        *(_uwsgi(lay, site, s, files[s]) for s in ("glance", "placement", "neutron", "nova")),
        _script(
            lay, site, "neutron-rpc-server", ["neutron-rpc-server", *neutron_conf], files["neutron"]
        ),
        _script(lay, site, "nova-conductor", ["nova-conductor", nova_conf], nova_files),
        _script(lay, site, "nova-scheduler", ["nova-scheduler", nova_conf], nova_files),
    ]


def computes(lay: Layout, site: Site, files: dict[str, list[Path]]) -> list[Service]:
    """Two nova-computes with the fake driver, each with its own host and state_path."""
    d = configs.etc(site, "nova")
    out = []
    for name in configs.COMPUTES:
        (site.dir / "nova" / name / "instances").mkdir(parents=True, exist_ok=True)
        overlay = d / f"{name}.conf"
        out.append(
            _script(
                lay,
                site,
                f"nova-{name}",
                ["nova-compute", f"--config-file={d / 'nova.conf'}", f"--config-file={overlay}"],
                [*files["nova"][:2], overlay],
            )
        )
    return out


def all_for(lay: Layout, site: Site, files: dict[str, list[Path]]) -> list[Service]:
    return [keystone(lay, site, files), *control(lay, site, files), *computes(lay, site, files)]


# every long-running process of a site, in start order (pid files are "siteN-<name>.pid")
NAMES = (
    "keystone",
    "glance",
    "placement",
    "neutron",
    "nova",
    "neutron-rpc-server",
    "nova-conductor",
    "nova-scheduler",
    *(f"nova-{c}" for c in configs.COMPUTES),
)
INFRA_NAMES = ("mariadb", "epmd", "rabbitmq")
