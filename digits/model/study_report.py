"""What a study found, for people: the trials as table rows, the summary a tuned model's
manifest records, the best line, and a plot of the optimisation history and importances."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import optuna


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial for the table artifact and the manifest."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "val_accuracy": None if trial.value is None else round(trial.value, 4),
                "epochs": len(trial.intermediate_values),
                "seconds": trial.user_attrs.get("seconds"),
                **{name: round_param(value) for name, value in sorted(trial.params.items())},
            }
        )
    return rows


def round_param(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


def study_summary(study: optuna.Study, storage_path: Path) -> dict[str, Any]:
    """The manifest's `study` field: the study's identity, every trial and the best one."""
    best = study.best_trial
    return {
        "name": study.study_name,
        "id": study._study_id,
        "storage": str(storage_path),
        "direction": "maximize",
        "objective": "validation accuracy",
        "best_trial": best.number,
        "best_params": best.params,
        "best_val_accuracy": best.value,
        "trials": trial_rows(study),
    }


def has_complete(study: optuna.Study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def describe_params(params: dict[str, Any]) -> str:
    """Short `name=value` list for task-run names and log lines."""
    return " ".join(f"{name}={round_param(value)}" for name, value in sorted(params.items()))


def plot_study(study: optuna.Study, path: Path) -> Path:
    """Optimisation history (each trial, best so far) beside the parameter importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    figure, (history, importance) = plt.subplots(1, 2, figsize=(11, 4))
    numbers = [t.number for t in done]
    values = [t.value for t in done]
    history.scatter(numbers, values, label="trial")
    history.step(numbers, np.maximum.accumulate(values) if values else [], where="post",
                 color="tab:red", label="best so far")
    history.set(title="Optimisation history", xlabel="trial", ylabel="validation accuracy")
    history.legend(loc="lower right")
    scores = importances(study)
    importance.barh(list(scores), list(scores.values()))
    importance.set(title="Parameter importance (fANOVA)" if scores else
                   "Parameter importance: needs 2+ completed trials", xlabel="importance")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def importances(study: optuna.Study) -> dict[str, float]:
    """Parameter importances, or none while too few trials completed to estimate them."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    try:
        scores = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):
        return {}
    return dict(sorted(scores.items(), key=lambda item: item[1]))
