"""Low-level measurement shared by training, serving and analysis: binary and regression
scores with bootstrap intervals (`scores`), Platt scaling and control-set thresholds
(`calibration`, `platt`), and the label check (`labels`). Imports nothing above `errors`."""
