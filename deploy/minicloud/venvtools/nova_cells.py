"""Nova's database setup in one process: what four ``nova-manage`` runs would do.

Runs with the services venv's python: ``nova_cells.py NOVA_CONF CELL0_DB_URL``.
``api_db sync``, ``cell_v2 map_cell0``, ``db sync`` (cell1 and cell0) and
``cell_v2 create_cell --name cell1`` through nova-manage's own command classes; each
nova-manage start costs ~5 s of CPU, which a 2-core machine feels.
"""

from __future__ import annotations

import sys

from nova import config, objects
from nova.cmd import manage
from oslo_log import log as logging


def main() -> int:
    conf_file, cell0_url = sys.argv[1:3]
    config.parse_args(["nova-manage", f"--config-file={conf_file}"])
    logging.setup(manage.CONF, "nova")
    objects.register_all()
    cells = manage.CellV2Commands()
    steps = [
        ("api_db sync", lambda: manage.ApiDbCommands().sync(), (0, None)),
        ("cell_v2 map_cell0", lambda: cells.map_cell0(database_connection=cell0_url), (0, None)),
        ("db sync", lambda: manage.DbCommands().sync(), (0, None)),
        # 2: a cell with this database already exists
        ("cell_v2 create_cell", lambda: cells.create_cell(name="cell1"), (0, 2, None)),
    ]
    for name, step, ok in steps:
        rc = step()
        print(f"nova_cells: {name} -> {rc}", flush=True)
        if rc not in ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
