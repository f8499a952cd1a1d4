"""Time-series forecasting: series reading and splitting, the patch Transformer, forecast metrics and baselines."""
