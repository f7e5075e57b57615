"""``earshot demo``: a local web page to try both papers' trained models.

:mod:`.handlers` holds what the page does (pure functions over the library's inference
and codec code), :mod:`.app` the Gradio page that lays them out. Gradio is imported only
by :mod:`.app`, inside its functions.
"""
