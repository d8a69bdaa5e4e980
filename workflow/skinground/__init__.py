"""skinground: Qwen2-VL grounded in quantitative SLICE-3D lesion attributes.

The library the workflow's scripts share, one sub-package per stage; a stage imports only the
stages above it in this list (``tests/test_layers.py``):

- ``core``: the DAG and its config: ``plan`` (models, splits, methods, jobs; standard library
  only), ``outputs`` (the results tree), ``config`` (the one config loader), ``deps`` (a
  script's library files), ``script`` (entry points), ``errors``, ``io`` (atomic outputs),
  ``tables``, ``progress``, ``versions``, ``provenance``;
- ``data``: ``attributes`` (SLICE-3D columns, the 16 attributes), ``answers`` (the answer
  format and its parse), ``metadata``, ``images``, ``manifest``, ``split`` (patients),
  ``tuples`` (W-attribute training tuples), ``groups``, ``shards``;
- ``model``: ``loading`` (processor, model, adapter), ``lora``, ``prefix`` and
  ``shared_cache`` (the image prefix computed once), ``batches`` (training batches),
  ``global_batch``, ``train``, ``checkpoints``, ``predict``, ``embed`` (h_im, h_im,a);
- ``retrieval``: ``spaces``, ``index`` (FAISS), ``search`` (the methods' arithmetic),
  ``methods`` (the rules' jobs), ``query`` (a new image, on the fly);
- ``evaluation``: ``metrics`` (R²), ``percentile`` (Fig. 4's measure), ``group_criterion``,
  ``stats``, ``significance``, ``diagnosis``, ``probe``, ``figures``, ``boxplots``, ``grids``;
- ``cost``: ``flops``, ``memory``, ``estimate``, ``calibration``, ``report``
  (``python -m skinground.cost``);
- ``demo``: the demo's synthetic cohort and tiny models.

``cli`` (the ``skinground`` command) stands above them all.
"""

__version__ = "0.1.0"
