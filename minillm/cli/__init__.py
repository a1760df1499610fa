"""The command layer: ``minillm <command>`` for every stage, and the only place that parses arguments.

Each module registers one group of commands on the parser that :mod:`minillm.cli.entry` builds;
``finetune_recipe`` is the recipe behind ``minillm finetune`` (it scores with lesson 09's metrics,
so it sits above every stage).
"""

from minillm.cli.entry import OneLineParser, build_parser, checked_number, main

__all__ = ["OneLineParser", "build_parser", "checked_number", "main"]
