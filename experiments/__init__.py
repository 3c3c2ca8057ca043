"""Experiments apart from the library: the long-document memory case (``gatesum memory``).

``recall``: the recall task (a key at the start of real text, named from the state alone) and
its training loop; ``memory``: the sweep over cells × lags and the command line, with
``memory_report`` writing its tables and plots; ``ship``: the recall models that ship with the
package (``gatesum.model.recall`` loads them); ``compare_cells``: encoder cells compared on real
summaries at equal training time. They use ``gatesum.model`` and ``gatesum.training``; nothing in
the library imports them.
"""
