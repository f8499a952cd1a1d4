"""Data modules: files and DataFrames to tf.data, one module per domain."""
