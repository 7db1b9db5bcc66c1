"""Pipeline parameters: typed overrides with errors that name the parameter."""

import pytest

from pipelines.config import PipelineParams, parse_overrides


def test_overrides_are_converted_to_field_types():
    params = PipelineParams().with_overrides(parse_overrides(["mc_events=100", "jit_compile=true", "learning_rate=2e-4", "preset=tiny"]))
    assert params.mc_events == 100 and params.jit_compile is True
    assert params.learning_rate == pytest.approx(2e-4) and params.preset == "tiny"


def test_unknown_and_malformed_parameters_are_named():
    with pytest.raises(ValueError, match="mc_event"):
        PipelineParams().with_overrides({"mc_event": "3"})
    with pytest.raises(ValueError, match="mc_events='many'"):
        PipelineParams().with_overrides({"mc_events": "many"})
    with pytest.raises(ValueError, match="preset"):
        parse_overrides(["preset"])


def test_round_trip_through_dict():
    params = PipelineParams(mc_events=10)
    assert PipelineParams.from_dict(params.to_dict()) == params
