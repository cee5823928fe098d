"""One module per `clear-sae` subcommand: each has `NAME`, `HELP`, `add_arguments(parser)` and `run(args)`."""

from clear_sae.cli.commands import (
    cache,
    concept,
    demo,
    erase,
    evaluate,
    export,
    features,
    inspect,
    pull,
    push,
    toy_concept,
    train,
)

ALL = (cache, train, concept, erase, evaluate, toy_concept, features, inspect, export, push, pull, demo)
"""The subcommands, in the order a user runs them."""
