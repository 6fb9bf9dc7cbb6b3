"""Simulated site descriptions: YAML in, every problem named by its dotted path."""

from __future__ import annotations

from pathlib import Path

import pytest

from siteagent import errors, sim_config
from siteagent.drivers import sim

GOOD = """
site: lab
hosts:
  - name: h1
    cells:
      - {id: 0, cpus: 4, pcpus: 2, memory_mb: 4096, hugepages: {2048: 16},
         sriov: [{physnet: p1, device: ens1, vfs: 4}]}
"""


def test_a_good_description() -> None:
    config = sim_config.load_yaml(GOOD)
    assert config.site == "lab"
    (cell,) = config.hosts[0].cells
    assert (cell.cpus, cell.pcpus, dict(cell.hugepages)) == (4, 2, {2048: 16})
    assert cell.sriov == (sim_config.SimVfPool("p1", "ens1", 4),)
    assert (config.cpu_allocation_ratio, config.build_polls, config.latency_s) == (4.0, 0, 0.0)


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("site: x\nhosts: []\n", ["hosts: a site needs at least one host"]),
        ("- a\n", ["sim config: must be a mapping with site and hosts"]),
        ("site: [unclosed\n", None),
        (GOOD.replace("pcpus: 2", "pcpus: 9"), ["hosts.0.cells.0.pcpus: 9 dedicated of 4 CPUs"]),
        (GOOD.replace("cpus: 4,", "cpus: 0,"), ["hosts.0.cells.0.cpus: Input should be greater"]),
        (
            GOOD.replace("vfs: 4", "vfz: 4"),
            [
                "hosts.0.cells.0.sriov.0.vfs: Field required",
                "hosts.0.cells.0.sriov.0.vfz: Unexpected keyword",
            ],
        ),
        (GOOD.replace("{2048: 16}", "{2048: lots}"), ["hosts.0.cells.0.hugepages.2048: Input"]),
        (
            GOOD + "  - name: h1\n    cells: []\n",
            ["hosts.1.name: 'h1' is empty or not unique", "hosts.1.cells: a host needs"],
        ),
        (GOOD.replace("site: lab", "site: lab\nbuild_polls: -1"), ["build_polls: Input should"]),
    ],
)
def test_problems_are_named_by_path(text: str, problems: list[str] | None) -> None:
    with pytest.raises(errors.SettingsError) as caught:
        sim_config.load_yaml(text)
    if problems is None:
        assert caught.value.problems[0].startswith("sim config: not valid YAML")
        return
    assert len(caught.value.problems) == len(problems)
    for got, want in zip(sorted(caught.value.problems), sorted(problems), strict=True):
        assert got.startswith(want), got


def test_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(GOOD.replace("pcpus: 2", "pcpus: 5"))
    with pytest.raises(errors.SettingsError, match="pcpus: 5 dedicated"):
        sim.SimSite.from_file(path)
    with pytest.raises(errors.SettingsError, match=r"missing\.yaml: cannot read"):
        sim.SimSite.from_file(tmp_path / "missing.yaml")
    path.write_text(GOOD)
    assert sim.SimSite.from_file(path).site == "lab"


def test_generated_sites_differ_by_id_and_seed_but_not_by_call() -> None:
    made = {
        (site, seed): sim_config.generated(site, hosts=8, seed=seed)
        for site in ("a", "b")
        for seed in (0, 1)
    }
    assert sim_config.generated("a", hosts=8, seed=0) == made["a", 0]
    assert len({repr(config.hosts[0].cells) + repr(config.hosts) for config in made.values()}) > 1
    a0 = made["a", 0]
    assert [h.name for h in a0.hosts][:2] == ["a-cmp-001", "a-cmp-002"]
    for host in a0.hosts:
        for cell in host.cells:
            assert 0 < cell.pcpus < cell.cpus
            assert set(cell.hugepages) == {2048, 1048576}
    assert sim_config.from_dict(_round_trip(a0)) == a0


def test_generated_rejects_empty_sites() -> None:
    with pytest.raises(errors.SettingsError, match="hosts and cells must be ≥ 1"):
        sim_config.generated("x", hosts=0)


def _round_trip(config: sim_config.SimSiteConfig) -> dict[str, object]:
    import dataclasses

    return dataclasses.asdict(config)
