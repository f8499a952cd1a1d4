"""Sequential recommendation: interaction tables, leave-one-out splits, SASRec, ranking metrics and baselines."""
