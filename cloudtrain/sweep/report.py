"""`sweep_report.html`: Optuna's plotly figures of a sweep's trials, whichever backend ran them.

The trials are added to an in-memory Optuna study (completed ones with their objective and, where known, each
epoch's value; pruned ones as PRUNED), and Optuna draws the optimisation history, the parallel coordinates,
the parameter importances and the intermediate values from it. plotly.js is embedded once in the page: it
opens offline.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudtrain.spec.sweep import ParameterRange
    from cloudtrain.sweep.trials import SweepInfo

FIGURES = (  # (title, optuna.visualization function, least completed trials it needs)
    ("Optimisation history", "plot_optimization_history", 1),
    ("Parallel coordinates", "plot_parallel_coordinate", 1),
    ("Parameter importances", "plot_param_importances", 2),
    ("Intermediate values (each epoch)", "plot_intermediate_values", 1),
)


def study(sweep: SweepInfo, parameters: dict[str, ParameterRange]) -> Any:
    """An in-memory Optuna study holding the sweep's ended trials."""
    import optuna

    from cloudtrain.sweep.space import fits, optuna_distributions

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = "maximize" if sweep.goal == "maximize" else "minimize"
    result = optuna.create_study(direction=direction, study_name=sweep.name)
    distributions = optuna_distributions(_as_drawn(parameters))
    for trial in sweep.trials:
        params = fits(trial.hyperparameters, distributions) if trial.done else None
        if params is None:
            continue
        if trial.objective is not None and trial.status == "Completed":
            state, value = optuna.trial.TrialState.COMPLETE, trial.objective
        elif trial.pruned:
            state, value = optuna.trial.TrialState.PRUNED, None
        else:
            state, value = optuna.trial.TrialState.FAIL, None
        result.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=value,
                params=params,
                distributions=distributions,
                intermediate_values=dict(enumerate(trial.history, start=1)),
                user_attrs={"job": trial.name},
            )
        )
    return result


def _as_drawn(parameters: dict[str, ParameterRange]) -> dict[str, ParameterRange]:
    """Reverse-log ranges shown in the values a trial got (Optuna samples them as 1 - x)."""
    return {
        k: r.model_copy(update={"scale": "linear"}) if r.scale == "reverse_log" else r for k, r in parameters.items()
    }


def render(sweep: SweepInfo, parameters: dict[str, ParameterRange]) -> str:
    """The whole page: a summary, the figures (plotly.js embedded with the first), the trials table."""
    import optuna.visualization as vis

    from cloudtrain.sweep.trials import trials_csv

    s = study(sweep, parameters)
    completed = sum(t.state.name == "COMPLETE" for t in s.trials)
    parts: list[str] = []
    embedded = False
    for title, function, needs in FIGURES:
        if completed < needs:
            parts.append(f"<h2>{html.escape(title)}</h2><p>needs {needs} completed trials ({completed} so far)</p>")
            continue
        try:
            figure = getattr(vis, function)(s)
        except (ValueError, RuntimeError) as e:  # Optuna's own refusal (e.g. one value for every parameter)
            parts.append(f"<h2>{html.escape(title)}</h2><p>{html.escape(str(e))}</p>")
            continue
        figure.update_layout(title=title)
        div = figure.to_html(full_html=False, include_plotlyjs=not embedded, div_id=function)
        embedded = True
        parts.append(f'<section class="figure">{div}</section>')
    best = sweep.best
    summary = (
        f"{sweep.backend} sweep, {sweep.strategy}, {len(sweep.trials)} of {sweep.max_trials} trials; "
        f"objective: {sweep.goal} {sweep.metric}; best: "
        + (
            f"{best.name} ({sweep.metric} = {best.objective:g})"
            if best is not None and best.objective is not None
            else "none yet"
        )
    )
    rows = trials_csv(sweep).splitlines()
    table = "".join(
        "<tr>" + "".join(f"<{tag}>{html.escape(cell)}</{tag}>" for cell in _cells(row)) + "</tr>"
        for i, row in enumerate(rows)
        for tag in ["th" if i == 0 else "td"]
    )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>Sweep {html.escape(sweep.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>"
        f"<h1>Sweep {html.escape(sweep.name)}</h1><p>{html.escape(summary)}</p>"
        + "".join(parts)
        + f"<h2>Trials</h2><table>{table}</table></body></html>\n"
    )


def _cells(row: str) -> list[str]:
    import csv

    return next(csv.reader([row]))
