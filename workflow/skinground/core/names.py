"""The names a config may use whose meaning is code, stated once: the schema states none of
them (its ``x-enum-from`` keys name these lists; ``core.config`` fills them in, with the
methods and models of ``core.plan``), and the code that gives each name its meaning imports
the list from here.

- :data:`LAYOUTS`: the training batches (``train.layout``; ``model.batches``);
- :data:`H_IMA_TOKENS`: where h_im,a is read (``embed.h_ima_token``; ``model.prefix``);
- :data:`ENCODER_FORMATS`: the image encoders' transformers classes
  (``model.encoders.<name>.format``; ``model.loading``);
- :data:`RESAMPLE_FILTERS`: an encoder preprocessing's resampling (``model.loading``).
"""

LAYOUTS = ("per_tuple", "per_image")
#: "question": the final token of the question (the paper's Eq. 3: the last row of
#: f([g(I), psi(Q(a))]); the conclusion's "final question token"), or "prompt_end", the last
#: token of the prompt (the ``\n`` closing the assistant header, five tokens later: the
#: position trained to emit the answer's first token).
H_IMA_TOKENS = ("question", "prompt_end")
ENCODER_FORMATS = ("clip", "siglip")
RESAMPLE_FILTERS = ("bicubic", "bilinear")
