"""skinground: Qwen2-VL grounded in quantitative SLICE-3D lesion attributes.

The library the workflow's scripts share. Modules are named for what they hold:
``attributes`` (the SLICE-3D columns and the 16 studied attributes), ``io`` (atomic
outputs), ``synthetic`` (the embedded demo dataset), ``data`` (metadata + image reader),
``split`` (patient split), ``tuples`` (W-attribute training tuples).
"""

__version__ = "0.1.0"
