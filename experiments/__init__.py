"""Experiments apart from the library: the long-document memory case (``gatesum memory``).

``memory``: the recall experiment (a key at the start of real text, recalled from the final
state) and the memory traces; ``compare_cells``: encoder cells compared on real summaries at
equal training time. They use ``gatesum.model`` and ``gatesum.training``; nothing in the library
imports them.
"""
