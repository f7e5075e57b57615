"""Pictures for people: the one image conversion (:mod:`.images`), labelled image grids
and video strips (:mod:`.grids`), and metric plots (:mod:`.plots`). Shared by both papers'
training samples, evaluation figures and inference outputs."""
