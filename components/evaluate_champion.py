"""Component: the registry's production champion, evaluated on this run's validation and test splits."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def evaluate_champion(
    data: Input[Dataset],
    registry: str,
    model_name: str,
    torch_threads: int,
    champion_evaluation: Output[Artifact],
):
    """Reads the champion pointer once and writes ``champion_ref.json`` (the ``release.records.ChampionRef`` the gate
    judges against and whose generation the push compares, or ``null`` when there is none yet) and, for a
    champion, ``valid/`` and ``test/`` evaluations of it on this run's data (items matched by id; see
    trainer.evaluate), so the gate pairs the same users."""
    import dataclasses
    import json
    import os

    from components.artifacts import SPLITS, set_torch_threads
    from components.events import Task
    from core.contract import CHAMPION_REF
    from release.registry import read_champion
    from trainer.evaluate import evaluate

    task = Task("evaluate_champion")
    set_torch_threads(torch_threads)
    champion = read_champion(registry, model_name)
    os.makedirs(champion_evaluation.path, exist_ok=True)
    if champion is not None:
        for split in SPLITS:
            evaluate(champion.uri, data.path, split, os.path.join(champion_evaluation.path, split))
    with open(os.path.join(champion_evaluation.path, CHAMPION_REF), "w") as f:
        json.dump({"champion": dataclasses.asdict(champion) if champion else None}, f, indent=2)
    champion_evaluation.metadata["champion"] = champion.version if champion else ""
    task.done(f"champion {champion.version}" if champion else "no production champion yet")
