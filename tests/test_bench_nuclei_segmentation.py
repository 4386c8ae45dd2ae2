"""The nuclei pipeline benchmark's arithmetic (benchmarks/bench_nuclei_segmentation.py); the timings themselves are
recorded in data/nuclei_segmentation/pipeline_benchmark.json, not rerun here."""
import importlib.util

import pytest

from conftest import REPO


def _bench():
    spec = importlib.util.spec_from_file_location("bench_nuclei_segmentation",
                                                  REPO / "benchmarks" / "bench_nuclei_segmentation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_share_is_step_time_on_cached_tensors_over_end_to_end_step_time():
    share = _bench().model_share
    # model alone 4 img/s (0.25 s per image), end to end 1 img/s (1 s per image): the model is a quarter of the step
    assert share(4.0, 1.0) == pytest.approx(0.25)
    assert share(2.0, 2.0) == pytest.approx(1.0)           # the input costs nothing: all of the step is the model
    assert share(10.0, 9.0) == pytest.approx(0.9)
    # ratio of end-to-end rates = ratio of shares (same model rate): what the notebook's note relies on
    assert share(5.0, 4.0) / share(5.0, 2.0) == pytest.approx(4.0 / 2.0)


@pytest.mark.parametrize("model, end_to_end", [(0.0, 1.0), (1.0, 0.0), (-1.0, 1.0), (float("nan"), 1.0),
                                               (1.0, float("inf"))])
def test_model_share_rejects_rates_that_are_not_positive_and_finite(model, end_to_end):
    with pytest.raises(ValueError):
        _bench().model_share(model, end_to_end)
