"""``python -m skinground.cost CONFIG...``: the paper-scale cost of a config, as a table
(``skinground.cost.report``)."""

from skinground.cost.report import main

main()
