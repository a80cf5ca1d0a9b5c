"""The benchmark's runs, by letter (a light module: `bench` parses its options before importing Lightning)."""

RUNS = {"a": "plain PyTorch loop", "b": "fit, no plugins", "c": "fit + default plugins", "d": "fit, fast path",
        "e": "fast path + plugins"}
FAST_RUNS = "de"  # on the fast path (CUDA only)
PLUGIN_RUNS = "ce"  # with the default plugins
