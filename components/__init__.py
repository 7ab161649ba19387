"""KFP components: one per file, each a thin wrapper that reads typed artifacts, calls a library function and
writes typed artifacts. ``pipelines/pipeline.py`` wires them into the DAG."""
