"""The embedded demo's builders: synthetic SLICE-3D-format data (lesion tiles, their
measurements and colours) and the tiny models built locally. Only the demo's rules
(``synthetic_data``, ``build_models``) and the tests use them; a paper-scale run never does.
"""
