"""The DAG and its config, shared by every stage: the plan, the results tree, the config loader,
errors, atomic outputs, tables and provenance."""
