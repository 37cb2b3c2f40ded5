"""What a sweep is whichever backend runs it: the search space, the dollar ceiling, trials and the report.

The spec's `sweep:` section (`cloudtrain.spec.sweep`) maps here to SageMaker's ParameterRanges and to Optuna's
distributions (`space`), to a cost ceiling (`cost`), and a sweep's trials to `status`'s table, the
trials CSV and the plotly report (`trials`, `report`). Optuna and plotly are imported only where used.
"""
