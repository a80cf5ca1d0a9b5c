"""Load a saved model for offline analysis: a `fit` checkpoint or a raw TransformerLens state_dict (the tutorial's)."""

import inspect
import sys
from pathlib import Path

import torch
import yaml
from transformer_lens import HookedTransformer

from prevpos.checkpoints import epochs_trained, load_failure, pickled_object, refuse_a_folder, shape_mismatches
from prevpos.data import DATA_KEYS, DATA_SETTINGS, PrevTokenData
from prevpos.errors import ConfigError

_BUFFERS = ("mask", "IGNORE")  # causal-mask buffers: rebuilt by TransformerLens, absent from some saved files


def load_weights(path: str | Path) -> tuple[HookedTransformer, dict, int]:
    """(model, its PrevTokenModel settings, training step) from FILE, or ConfigError saying why not."""
    return model_of(read_weights_file(path), Path(path))


def read_weights_file(path: str | Path):
    """What FILE holds (a checkpoint's dict, a state_dict), or ConfigError saying why it cannot be read.

    weights_only=True: a file from elsewhere cannot run code while loading.
    """
    path = Path(path)
    refuse_a_folder("--weights", path)
    if not path.is_file():
        raise ConfigError(f"--weights {path}: no such file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and unpickler errors all mean the same to the user
        if pickled := pickled_object(error):  # e.g. torch.save(model), a notebook's habit
            raise ConfigError(f"--weights {path}: a pickled {pickled} object, not weights; prevpos "
                              "loads only tensors (unpickling could run code): save them with "
                              f"torch.save(model.state_dict(), \"{path}\")") from None
        raise ConfigError(f"--weights {path}: not a torch file of weights ({load_failure(error, path)})") from None
    return saved


def model_of(saved, path: Path) -> tuple[HookedTransformer, dict, int]:
    """load_weights of `saved`, read from `path` by read_weights_file."""
    if isinstance(saved, dict) and "state_dict" in saved and "hyper_parameters" in saved:
        return _from_checkpoint(saved, path)
    if isinstance(saved, dict) and "embed.W_E" in saved:
        from prevpos.transformer import build_transformer

        settings = shape_of(saved)
        model = build_transformer(**settings)
        _load_checked(model, saved, path)
        _note_frozen_weights_in_use(model, path)
        return model, settings, 0
    raise ConfigError(f"--weights {path}: neither a `prevpos fit` checkpoint (no state_dict/hyper_parameters) nor a "
                      "TransformerLens state_dict (no embed.W_E)")


def refuse_non_finite(model: torch.nn.Module, path) -> None:
    """ConfigError naming the first weight that holds NaN or inf: every number analysed from it would be NaN."""
    bad = next((name for name, weight in model.named_parameters() if not weight.isfinite().all()), None)
    if bad is not None:
        raise ConfigError(f"--weights {path}: {bad} holds NaN or inf (a model that diverged), so every analysis of it "
                          "would be NaN; analyse an earlier checkpoint of the run")


def epochs_of(saved) -> int:
    """The epochs a fit checkpoint had trained every batch of (run.epoch of its step in the fit); 0 for a raw
    state_dict."""
    return epochs_trained(saved) if isinstance(saved, dict) and "state_dict" in saved else 0


def saved_data_settings(path: str | Path) -> tuple[dict, str | None]:
    """The run's data settings (PrevTokenData's arguments: seed, n_tokens, bos, probe_size, ...), and where they
    were found: in the checkpoint, or, in one saved before checkpoints held them, in its run's config.yaml. ({},
    None) for neither, e.g. a raw state_dict: the defaults then."""
    return data_settings_of(read_weights_file(path), Path(path))


def data_settings_of(saved, path: Path) -> tuple[dict, str | None]:
    """saved_data_settings of the checkpoint `saved`, loaded from `path`."""
    data_state = saved.get(PrevTokenData.__qualname__) if isinstance(saved, dict) else None
    if isinstance(data_state, dict) and DATA_SETTINGS in data_state:
        return data_state[DATA_SETTINGS], "its checkpoint"
    if not (isinstance(saved, dict) and "state_dict" in saved):
        return {}, None
    # RUN_DIR/checkpoints/last.ckpt with RUN_DIR/config.yaml; W&B runs keep config.yaml beside their checkpoints.
    for config in (path.parent.parent / "config.yaml", path.parent / "config.yaml"):
        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data")
        except (OSError, yaml.YAMLError, AttributeError):  # absent, unreadable, or not a config
            continue
        if isinstance(data, dict):
            return {key: data[key] for key in DATA_KEYS if key in data}, str(config)
    return {}, None


def shape_of(saved: dict) -> dict:
    """The model settings (n_layers, n_heads, ...) that a raw TransformerLens state_dict was saved from, read off its
    tensor shapes; those it does not show keep their defaults, and _load_checked names any tensor that then differs."""
    shapes = {key: tuple(value.shape) for key, value in saved.items() if isinstance(value, torch.Tensor)}
    settings = {}
    if len(shapes.get("embed.W_E", ())) == 2:
        settings["d_vocab"], settings["d_model"] = shapes["embed.W_E"]
    if len(shapes.get("blocks.0.attn.W_Q", ())) == 3:
        settings["n_heads"], _, settings["d_head"] = shapes["blocks.0.attn.W_Q"]
    if len(shapes.get("pos_embed.W_pos", ())) == 2:
        settings["n_ctx"] = shapes["pos_embed.W_pos"][0]
        if saved["pos_embed.W_pos"].count_nonzero() > 0:  # trained positions: the model uses them
            settings["positional"] = "learned"
    layers = {key.split(".")[1] for key in shapes if key.startswith("blocks.")}
    if layers and all(layer.isdigit() for layer in layers):
        settings["n_layers"] = max(int(layer) for layer in layers) + 1
    settings["attn_only"] = not any(key.startswith("blocks.0.mlp.") for key in shapes)
    return settings


def _from_checkpoint(saved: dict, path: Path) -> tuple[HookedTransformer, dict, int]:
    from prevpos.module import PrevTokenModel

    accepted = inspect.signature(PrevTokenModel).parameters
    hparams = {k: v for k, v in (saved["hyper_parameters"] or {}).items() if k in accepted}
    try:  # settings of another version of prevpos are left out; those it takes must still make a model
        module = PrevTokenModel(**hparams)
        step = int(saved.get("global_step", 0))
    except (ConfigError, TypeError, ValueError) as error:
        raise ConfigError(f"--weights {path}: its saved settings do not make a prevpos model ({error}); is it a "
                          "checkpoint of `python -m prevpos fit`?") from None
    _load_checked(module, saved["state_dict"], path, OF_A_CHECKPOINT)
    return module.model, hparams, step


OF_A_RAW_STATE_DICT = ("a raw state_dict must be of a HookedTransformer without LayerNorm, attention-only or with ReLU "
                       "MLPs of 4 x d_model")
OF_A_CHECKPOINT = "a Lightning checkpoint of another model (is it of `python -m prevpos fit`?)"


def _load_checked(model: torch.nn.Module, saved: dict, path: Path, what: str = OF_A_RAW_STATE_DICT) -> None:
    expected = model.state_dict()
    wrong = [f"{k} is {got}, expected {want}" for k, got, want in shape_mismatches(saved, expected)]
    wrong += [f"{k} is missing" for k in expected if k not in saved and k.rsplit(".", 1)[-1] not in _BUFFERS]
    wrong += [f"unexpected {k}" for k in saved if k not in expected]
    if wrong:
        raise ConfigError(f"--weights {path}: does not fit the model ({wrong[0]}; {len(wrong)} difference(s)); {what}")
    model.load_state_dict({k: saved[k] for k in expected if k in saved}, strict=False)


def _note_frozen_weights_in_use(model: HookedTransformer, path: Path) -> None:
    """Say so if the file holds non-zero values where prevpos's models hold zeros (biases): analysed as saved."""
    used = [n for n, p in model.named_parameters() if not p.requires_grad and p.count_nonzero() > 0]
    if used:
        print(f"note: {path} has non-zero {', '.join(used[:3])}: analysed as saved (the model uses them)",
              file=sys.stderr)
