"""Private MariaDB and RabbitMQ (with its own epmd) for one minicloud, on 127.0.0.1 only.

Both keep their data under the state directory and never touch the system instances'
directories or ports. MariaDB is tuned for throw-away speed (no fsync per commit, no binary
log). RabbitMQ gets one vhost per possible site and one user from a definitions file
loaded at boot, so no ``rabbitmqctl`` (which would need its own Erlang node) is needed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path

from . import install, layout
from .layout import Layout
from .procs import Service, StartError


def mariadb_dir(lay: Layout) -> Path:
    return lay.state_dir / "mariadb"


def my_cnf(lay: Layout) -> Path:
    return mariadb_dir(lay) / "my.cnf"


def write_mariadb_config(lay: Layout) -> None:
    d = mariadb_dir(lay)
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "tmp").mkdir(exist_ok=True)
    text = f"""\
[mysqld]
user = root
datadir = {d / "data"}
tmpdir = {d / "tmp"}
socket = {d / "mysqld.sock"}
pid-file = {d / "mysqld.pid"}
port = {lay.mariadb_port}
bind-address = {layout.HOST}
skip-name-resolve
skip-log-bin
max_connections = 2000
character-set-server = utf8mb3
collation-server = utf8mb3_general_ci
innodb_buffer_pool_size = 256M
innodb_log_file_size = 64M
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
sync_binlog = 0
performance_schema = OFF
max_allowed_packet = 64M

[client]
socket = {d / "mysqld.sock"}
port = {lay.mariadb_port}
user = root
"""
    _write_if_changed(my_cnf(lay), text)


def mariadb_service(lay: Layout) -> Service:
    return Service(
        "mariadb",
        [install.MARIADBD, f"--defaults-file={my_cnf(lay)}"],
        lay.run_dir,
        lay.log_dir,
        config_files=[my_cnf(lay)],
        port=lay.mariadb_port,
        timeout=60,
    )


def init_mariadb(lay: Layout) -> None:
    """Creates the data directory's system tables once."""
    if (mariadb_dir(lay) / "data" / "mysql").is_dir():
        return
    res = subprocess.run(
        [
            "mariadb-install-db",
            f"--defaults-file={my_cnf(lay)}",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
        ],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise StartError(f"mariadb-install-db failed:\n{(res.stdout + res.stderr)[-3000:]}")


def sql(lay: Layout, statements: str) -> str:
    """Runs SQL as root over the private socket; returns stdout (tab separated)."""
    res = subprocess.run(
        ["mariadb", f"--defaults-file={my_cnf(lay)}", "-N", "-B", "-e", statements],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise StartError(f"SQL failed: {res.stderr.strip()}\n{statements[:500]}")
    return res.stdout


def create_databases(lay: Layout, names: list[str]) -> None:
    """The ``minicloud`` user (TCP, password) and the given databases, idempotently."""
    pw = lay.secrets["db"]
    stmts = [
        f"CREATE USER IF NOT EXISTS 'minicloud'@'{layout.HOST}' IDENTIFIED BY '{pw}'",
        f"GRANT ALL PRIVILEGES ON *.* TO 'minicloud'@'{layout.HOST}'",
    ]
    stmts += [f"CREATE DATABASE IF NOT EXISTS `{n}` CHARACTER SET utf8mb3" for n in names]
    sql(lay, ";\n".join(stmts) + ";")


def recreate_databases(lay: Layout, names: list[str]) -> None:
    """Drops and creates the given databases (empty, for a schema sync from scratch)."""
    stmts = [f"DROP DATABASE IF EXISTS `{n}`" for n in names]
    stmts += [f"CREATE DATABASE `{n}` CHARACTER SET utf8mb3" for n in names]
    sql(lay, ";\n".join(stmts) + ";")


def rabbit_dir(lay: Layout) -> Path:
    return lay.state_dir / "rabbitmq"


def _rabbit_password_hash(password: str) -> str:
    salt = os.urandom(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def write_rabbit_config(lay: Layout) -> None:
    d = rabbit_dir(lay)
    d.mkdir(parents=True, exist_ok=True)
    defs_path = d / "definitions.json"
    vhosts = [lay.site(i).vhost for i in range(1, layout.MAX_SITES + 1)]
    # the hash is salted: keep the file while the password is the same
    old = json.loads(defs_path.read_text()) if defs_path.exists() else {}
    if old.get("_minicloud_pw") != hashlib.sha256(lay.secrets["rabbit"].encode()).hexdigest():
        defs = {
            "_minicloud_pw": hashlib.sha256(lay.secrets["rabbit"].encode()).hexdigest(),
            "users": [
                {
                    "name": "minicloud",
                    "tags": ["administrator"],
                    "password_hash": _rabbit_password_hash(lay.secrets["rabbit"]),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                }
            ],
            "vhosts": [{"name": v} for v in vhosts],
            "permissions": [
                {"user": "minicloud", "vhost": v, "configure": ".*", "write": ".*", "read": ".*"}
                for v in vhosts
            ],
        }
        defs_path.write_text(json.dumps(defs, indent=1))
    _write_if_changed(
        d / "rabbitmq.conf",
        f"""\
listeners.tcp.1 = {layout.HOST}:{lay.amqp_port}
definitions.import_backend = local_filesystem
definitions.local.path = {defs_path}
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
""",
    )
    _write_if_changed(d / "enabled_plugins", "[].\n")
    _write_if_changed(d / "rabbitmq-env.conf", "# empty: keeps the system one out\n")


def epmd_service(lay: Layout) -> Service:
    return Service(
        "epmd",
        [install.EPMD, "-address", layout.HOST, "-port", str(lay.epmd_port)],
        lay.run_dir,
        lay.log_dir,
        port=lay.epmd_port,
        timeout=15,
    )


def rabbit_service(lay: Layout) -> Service:
    d = rabbit_dir(lay)
    env = {
        "HOME": str(d),  # the Erlang cookie lives here
        "ERL_EPMD_PORT": str(lay.epmd_port),
        "RABBITMQ_NODENAME": f"minicloud{lay.base_port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": layout.HOST,
        "RABBITMQ_NODE_PORT": str(lay.amqp_port),
        "RABBITMQ_DIST_PORT": str(lay.dist_port),
        "RABBITMQ_BASE": str(d),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
        "RABBITMQ_LOG_BASE": str(lay.log_dir),
        "RABBITMQ_LOGS": str(lay.log_dir / "rabbitmq-server.log"),
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    return Service(
        "rabbitmq",
        [install.RABBITMQ_SERVER],
        lay.run_dir,
        lay.log_dir,
        env=env,
        config_files=[d / "rabbitmq.conf"],
        port=lay.amqp_port,
        timeout=90,
    )


def _write_if_changed(path: Path, text: str) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
