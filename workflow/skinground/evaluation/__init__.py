"""The evaluation stage: R², percentile ranks, the statistics, and the figures."""
