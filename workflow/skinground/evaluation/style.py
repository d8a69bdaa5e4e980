"""How the figures colour and name what they draw, the same in every figure: one colour per
retrieval method (Fig. 4's (a)-(d) and encoders, Fig. 5's group methods, and beside Fig. 2 the
probe of the space a method searches), and the mark of an encoder that is a tiny random
stand-in (``model.build_tiny``) rather than the model it is named after."""

from __future__ import annotations

from collections.abc import Collection, Iterable

#: One colour per method key, whichever figure draws it (seaborn's "colorblind" palette, and
#: Paul Tol's wine for the tenth): (c) Image is the same green in Figs. 4 and 5.
METHOD_COLOURS: dict[str, str] = {
    "image_text": "#0173B2",
    "hierarchical": "#DE8F05",
    "image_only": "#029E73",
    "image_untuned": "#D55E00",
    "composed": "#FBAFE4",
    "composed_hierarchical": "#ECE133",
    "fused": "#56B4E9",
    "rrf": "#882255",
    "random": "#949494",
}
#: The image encoders' colours by their place in ``model.encoders`` ((e), (e2), ...), then
#: any other method's, in turn; none is a colour of ``METHOD_COLOURS``.
OTHER_COLOURS = ("#CC78BC", "#CA9161", "#44AA99", "#332288", "#999933", "#AA4499")
#: The generated answers' bars (Fig. 2, beside the probes): no method's colour.
ANSWER_COLOURS: dict[str, str] = {"tuned": "#4D4D4D", "untuned": "#A6A6A6"}
#: What follows a stand-in encoder's name wherever a figure names it.
STAND_IN = "tiny random stand-in"


def method_colours(methods: Iterable[str]) -> dict[str, str]:
    """Each of ``methods`` -> its colour: ``METHOD_COLOURS``' where it has one, else the next
    of ``OTHER_COLOURS`` in the order given (cycling). Pass the run's encoders in config
    order, even those a figure does not draw, so that each keeps its colour in every figure."""
    colours, others = {}, 0
    for m in dict.fromkeys(methods):
        if m in METHOD_COLOURS:
            colours[m] = METHOD_COLOURS[m]
        else:
            colours[m] = OTHER_COLOURS[others % len(OTHER_COLOURS)]
            others += 1
    return colours


def stand_in(title: str, name: str, stand_ins: Collection[str]) -> str:
    """``title``, followed by "(tiny random stand-in)" when ``name`` is one of ``stand_ins``
    (the encoders ``model.build_tiny`` built)."""
    return f"{title} ({STAND_IN})" if name in stand_ins else title
