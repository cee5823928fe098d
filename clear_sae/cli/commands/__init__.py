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
    latent_strip,
    pull,
    push,
    toy_concept,
    train,
)

ALL = (cache, train, concept, erase, evaluate, toy_concept, features, inspect, export, latent_strip, push, pull, demo)
"""The subcommands, in the order a user runs them."""
