"""pipelines/parameters.py is the one record of the pipeline's parameters: the compiled DAG's inputs are exactly
its fields, and the argument checks read it without building the graph."""

from __future__ import annotations

import pytest

from pipelines import arguments, parameters, pipeline
from pipelines.cli import main


def test_the_compiled_inputs_are_the_records_fields():
    from pipelines.remote import cluster_pipeline

    expected = arguments.pipeline_parameters()
    assert list(expected) == list(parameters.NAMES)
    for built in (pipeline.create_pipeline(), cluster_pipeline(pipeline.Build())):
        inputs = built.component_spec.inputs
        assert {name: (spec.type, spec.default) for name, spec in inputs.items()} == expected
    assert expected["registry"] == ("String", None)  # required
    assert expected["variants"][0] == "List[Dict]" and expected["accelerator_count"] == ("String", "0")


def test_the_argument_checks_do_not_build_the_graph(monkeypatch, tmp_path):
    def no_graph(*args, **kwargs):
        raise AssertionError("the argument checks built the DAG")

    monkeypatch.setattr(pipeline, "graph", no_graph)
    from pipelines.profiles import PROFILES

    checked = arguments.validate_arguments(arguments.profile_arguments(PROFILES["smoke"], str(tmp_path / "r")))
    assert set(checked) == set(parameters.NAMES)


def test_interest_compile_refuses_an_image_without_a_registry_host(tmp_path, capsys):
    assert main(["compile", "--output", str(tmp_path / "p.yaml")]) == 2  # the default: interest-pipeline:<commit>
    assert "--image" in capsys.readouterr().err and not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize("flavour, documents", [([], 2), (["--vertex"], 1)])
def test_interest_compile_writes_each_flavour(tmp_path, flavour, documents):
    import yaml

    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), "--image", "ghcr.io/acme/interest-pipeline:3f2a9c1d0e4b",
                 *flavour]) == 0
    assert len(list(yaml.safe_load_all(out.read_text()))) == documents
