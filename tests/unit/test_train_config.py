"""TrainConfig's presets and the settings a manifest recorded."""

import pytest

from digits.config import TrainConfig, recorded_config, train_config
from digits.errors import UsageError


def test_a_setting_newer_than_the_manifest_builds_the_model_as_it_was():
    # A version trained before `stem` existed recorded every other setting of its day.
    recorded = {f: getattr(TrainConfig(), f) for f in ("model", "epochs", "batch_size", "width")}
    assert recorded_config(recorded).stem == "full"


def test_a_manifest_setting_no_longer_known_is_refused():
    with pytest.raises(UsageError, match="unknown training setting"):
        recorded_config({"model": "cnn", "momentum": 0.9})


@pytest.mark.parametrize(("settings", "message"), [
    ({"stem": "pooled"}, "--stem 'pooled' is not one of full, strided"),
    ({"lr_schedule": "step"}, "--lr-schedule 'step' is not one of constant, cosine, onecycle"),
    ({"test_shifts": "grid9"}, "--test-shifts 'grid9' is not one of none, cross5"),
])
def test_a_bad_choice_names_the_choices(settings, message):
    with pytest.raises(UsageError, match=message):
        train_config("cnn", **settings)


def test_the_stem_is_the_cnns():
    with pytest.raises(UsageError, match="--stem strided applies to the cnn only"):
        train_config("mlp", stem="strided")


def test_members_must_be_at_least_one():
    with pytest.raises(UsageError, match="--members must be at least 1"):
        train_config("cnn", members=0)


def test_best_is_the_full_stem_cnn_twice_over():
    from dataclasses import replace

    best = train_config("best")
    assert best.members == 2
    # the cnn as it was before issue 19 made the cheaper one the default, and (issue 30)
    # learning what is not a digit as the default does
    assert replace(best, members=1) == TrainConfig(model="cnn", outlier_exposure=0.3)
    assert best.outlier_exposure == train_config("cnn").outlier_exposure
    assert (best.stem, best.epochs, best.test_shifts) == ("full", 12, "none")
    # a manifest from before `members` reproduces one model
    assert recorded_config({"model": "cnn"}).members == 1
