"""The names a config may use whose meaning is code, stated once: the schema states none of
them (its ``x-enum-from`` keys name these lists; ``core.config`` fills them in, with the
methods and models of ``core.plan``), and the code that gives each name its meaning imports
the list from here.

- :data:`LAYOUTS`: the training batches (``train.layout``; ``model.batches``);
- :data:`H_IMA_TOKENS`: where h_im,a is read (``embed.h_ima_token``; ``model.prefix``);
- :data:`ENCODER_FORMATS`: the image encoders' transformers classes
  (``model.encoders.<name>.format``; ``model.loading``);
- :data:`RESAMPLE_FILTERS`: an encoder preprocessing's resampling (``model.loading``);
- :data:`METADATA_COLUMNS`, :data:`NUMERIC_COLUMNS`: SLICE-3D's columns, and those an attribute
  may be (``attributes``, ``stats.diagnosis``; ``data.attributes``).
"""

LAYOUTS = ("per_tuple", "per_image")
#: "question": the final token of the question (the paper's Eq. 3: the last row of
#: f([g(I), psi(Q(a))]); the conclusion's "final question token"), or "prompt_end", the last
#: token of the prompt (the ``\n`` closing the assistant header, five tokens later: the
#: position trained to emit the answer's first token).
H_IMA_TOKENS = ("question", "prompt_end")
ENCODER_FORMATS = ("clip", "siglip")
RESAMPLE_FILTERS = ("bicubic", "bilinear")

#: Every column of SLICE-3D's train-metadata.csv, in file order.
METADATA_COLUMNS: tuple[str, ...] = (
    "isic_id", "target", "patient_id", "age_approx", "sex", "anatom_site_general",
    "clin_size_long_diam_mm", "image_type", "tbp_tile_type",
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext",
    "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext",
    "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean",
    "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm",
    "tbp_lv_eccentricity", "tbp_lv_location", "tbp_lv_location_simple", "tbp_lv_minorAxisMM",
    "tbp_lv_nevi_confidence", "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM",
    "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt",
    "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
    "attribution", "copyright_license", "lesion_id",
    "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
    "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence",
)

#: Numeric per-lesion measurements that may serve as attributes.
NUMERIC_COLUMNS: tuple[str, ...] = (
    "clin_size_long_diam_mm",
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext",
    "tbp_lv_H", "tbp_lv_Hext", "tbp_lv_L", "tbp_lv_Lext",
    "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean",
    "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm",
    "tbp_lv_eccentricity", "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence",
    "tbp_lv_norm_border", "tbp_lv_norm_color", "tbp_lv_perimeterMM",
    "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt",
    "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_dnn_lesion_confidence",
)
