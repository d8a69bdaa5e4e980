"""skinground: Qwen2-VL grounded in quantitative SLICE-3D lesion attributes.

The library the workflow's scripts share, one module per noun:

- the DAG and its config: ``plan`` (models, splits, methods, jobs; standard library only),
  ``config`` (config files and profiles), ``deps`` (a script's library files), ``cli``
  (entry points), ``errors``, ``io`` (atomic outputs), ``progress``, ``tables``;
- data: ``attributes`` (SLICE-3D columns, the 16 attributes), ``data`` (metadata + image
  reader, manifest), ``split`` (patients), ``tuples`` (W-attribute training tuples), and the
  demo's ``synthetic`` (cohort and files), ``lesions`` (rendering), ``measure``, ``color``;
- models: ``models`` (processor, loading), ``tiny`` (the demo's builders), ``lora``,
  ``prefix`` (the image prefix computed once), ``layout`` (training batches), ``train``,
  ``checkpoints``, ``predict``, ``metrics`` (answers, R²);
- retrieval: ``embed`` (h_im, h_im,a), ``shards``, ``index`` (FAISS), ``retrieve`` (the
  methods), ``query`` (a new image, on the fly), ``evaluate`` (percentile ranks),
  ``figures``;
- paper scale: ``flops``, ``cost``, ``measured``.
"""

__version__ = "0.1.0"
