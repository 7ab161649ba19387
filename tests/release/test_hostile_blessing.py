"""The blessing treated as hostile: for every field of a real blessing (candidate, baseline and champion all
present), each value changed and each field dropped, then pushed. Each change is refused with a clear error, or
it does not change what ships: the model.pt, its test evaluation and the version the champion pointer names."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import contract, rundir, storage
from core.configs import ConfigError, to_dict
from release import registry
from release.gate import BlessingInvalid, GateConfig, decide
from release.records import Run
from tests.support.fake_artifacts import LENIENT, blessing_for, write_run

POLICY = registry.Policy(LENIENT, baseline="base")
REFUSED = (BlessingInvalid, ConfigError, registry.ChampionChanged)


def leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON document: objects' keys and lists' items, containers and leaves alike."""
    if path:
        yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from leaves(value, (*path, index))


def changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 1.5 + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    return None  # an object or a list: replaced by null


def mutate(document: dict, path: tuple, how: str) -> dict:
    out = copy.deepcopy(document)
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if how == "drop":
        del parent[path[-1]]
    else:
        parent[path[-1]] = changed(parent[path[-1]])
    return out


def load(name: str, model_dir: str, valid_dir: str | None, test_dir: str | None) -> Run:
    return Run.load(name=name, model_dir=str(model_dir), valid_dir=valid_dir and str(valid_dir),
                    test_dir=test_dir and str(test_dir))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """A registry whose champion is v1, and the real blessing of a candidate gated against it and a baseline."""
    root = tmp_path_factory.mktemp("hostile")
    champion = write_run(root, "champion", seed=1, hit_rate=0.3)
    pristine = str(root / "registry")
    registry.push(blessing_for(*champion), pristine, version="v1", policy=registry.Policy(LENIENT))
    candidate, base = write_run(root, "cand", seed=2, hit_rate=0.4), write_run(root, "base", seed=3, hit_rate=0.3)
    variants = [load(name, model, None, test) for name, (model, test) in (("cand", candidate), ("base", base))]
    blessing = decide(variants, "base", registry.read_champion(pristine), LENIENT).to_json()
    assert blessing["blessed"] and blessing["champion"]["version"] == "v1"
    assert {"candidate_model", "candidate_test", "model:base", "test:base", "champion_model",
            "champion_test"} == set(blessing["inputs"])
    honest = registry.push(blessing, shutil.copytree(pristine, root / "honest"), policy=POLICY)
    shipped = rundir.open_complete(honest.uri)
    return {"root": root, "pristine": pristine, "blessing": blessing, "version": honest.version,
            "model.pt": storage.read_bytes(shipped.path("model.pt")),
            "metrics": storage.read_json(shipped.path(contract.METRICS))}


@pytest.mark.slow  # 292 pushes (about 90 s on 2 shared cores)
def test_every_field_changed_or_dropped_is_refused_or_ships_the_same(world):
    accepted, refused, count = [], [], 0
    for path in leaves(world["blessing"]):
        for how in ("change", "drop"):
            count += 1
            forged = mutate(world["blessing"], path, how)
            target = Path(world["root"], f"try-{count}")
            shutil.copytree(world["pristine"], target)
            try:
                result = registry.push(forged, str(target), policy=POLICY)
            except REFUSED as exc:
                refused.append((path, how, str(exc).splitlines()[0]))
                continue
            pointer, _ = registry.read_pointer(str(target), "interest")
            if result.outcome == "not_blessed":  # a verdict turned down ships nothing
                assert pointer["version"] == "v1"
                refused.append((path, how, "not blessed"))
                continue
            accepted.append((path, how))
            version = rundir.open_complete(str(target / pointer["path"]))
            where = f"{how} {'/'.join(map(str, path))}"
            assert result.outcome == "pushed" and pointer["version"] == world["version"], where
            assert storage.read_bytes(version.path("model.pt")) == world["model.pt"], where
            assert storage.read_json(version.path(contract.METRICS)) == world["metrics"], where
            shutil.rmtree(target)
    assert count > 150 and refused, (count, refused)
    # What a forger may change without being refused names nothing that ships: record-keeping only.
    # What a forger may change without being refused is record-keeping that names nothing that ships (the
    # selection's evidence, names, where the gate read its inputs), or a policy field dropped to its default.
    free = [p for p, how in accepted if p[0] not in ("created_at", "runs", "candidate", "metric")
            and p[:2] not in (("champion", "evaluation"), ("champion", "re_evaluated"), ("champion", "same_data"))
            and not (p[0] == "config" and how == "drop" and to_dict(GateConfig())[p[1]] == to_dict(LENIENT)[p[1]])]
    assert not free, sorted({"/".join(map(str, p)) for p in free})
    print(f"{count} forged blessings: {len(refused)} refused, {len(accepted)} accepted, shipping the same bytes")
