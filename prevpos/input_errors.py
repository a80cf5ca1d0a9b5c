"""Configuration mistakes as one line that says what is wrong and how to fix it (no jsonargparse union dumps)."""

import difflib
import inspect
import re
from pathlib import Path

from lightning.fabric.utilities.exceptions import MisconfigurationException

from prevpos.cli import LIGHTNING_COMMANDS
from prevpos.errors import ConfigError
from prevpos.step_files import evaluation_logged_in


def explain_parser_error(message: str, parser) -> str:
    """jsonargparse's message in one line, with the close option name or the plugin list where that helps."""
    message = " ".join(message.split())
    help_of = re.match(r"--(trainer\.callbacks|trainer\.logger)\.help: Expected a dot import path string: ([\w.]+)",
                       message)
    if help_of:  # `--trainer.callbacks.help Explanatoin`
        unknown = _unknown_callback if help_of.group(1) == "trainer.callbacks" else _unknown_logger
        return f"--{help_of.group(1)}.help {help_of.group(2)}: {unknown(help_of.group(2))}"
    if 'key "trainer.callbacks"' in message:
        return _callback_error(message)
    logger = re.search(r'key "trainer.logger".* dot import path string: ([\w.]+)', message)
    if logger:
        return f"trainer.logger: {_unknown_logger(logger.group(1))}"
    if 'key "trainer.logger"' in message and (value := _init_arg_problem(message)):  # was cut at "Errors:"
        return f"trainer.logger: {value}"
    import_failed = re.search(r"key \"trainer.logger\".* Problem with given class_path '([\w.]+)': (.*?) - ", message)
    if import_failed:
        return f"trainer.logger: cannot use {import_failed.group(1)}: {import_failed.group(2)}"
    union = re.match(r'Parser key "([\w.]+)": Does not validate against any of the Union subtypes Subtypes: \[(.*?)\] '
                     r"Errors: .* Given value type: .* Given value: (.*)$", message)
    if union:
        return f"{union.group(1)}: expected {_type_names(union.group(2))}, got {union.group(3)}"
    unknown = (re.search(r"unrecognized arguments: --?([\w.\-]+)", message)
               or re.search(r"does not accept (?:option|nested key) '([\w.\-]+)'", message))
    if unknown:
        # Another command's option of the same name is no fix (`verbose` is validate's and test's, not fit's).
        others = [name for name in _option_names(parser) if name != unknown.group(1)]
        close = difflib.get_close_matches(unknown.group(1), others, n=1, cutoff=0.7)
        if close:
            message += f" (did you mean --{close[0]}?)"
    return message


def refuse_a_list_the_shell_split(argv: list[str]) -> None:
    """`--trainer.callbacks [A, B]` typed without quotes reaches us as "[A," and "B]": jsonargparse said "Expected a
    <class 'list'>", with nothing about the space."""
    option = ""
    for word in argv:
        if word.startswith("--"):
            option, _, word = word.partition("=")
        for opening, closing in ("[]", "{}"):
            if word.startswith(opening) and word.count(opening) > word.count(closing):
                lists = f' (e.g. "{option}=[A, B]") or leave the spaces out ({option}=[A,B])' if opening == "[" else ""
                raise ConfigError(f"{option}: the shell cut its value at a space ({word!r} is only its start); "
                                  f"quote the whole value{lists}")


# A config's groups of settings, each with an example of its form.
SECTION_EXAMPLES = {"model": "{lr: 0.01}", "data": "{batch_size: 256}", "trainer": "{max_epochs: 60}",
                    "checkpoint": "{every_n_train_steps: 100}"}


def check_config_files(argv: list[str]) -> None:
    """ConfigError naming the file for each --config that cannot be a config: jsonargparse's messages do not name it
    ("Problems parsing config: ... in "<unicode string>", line 16"), and a binary file (a checkpoint) was a
    UnicodeDecodeError traceback. A value that is YAML text, not a file (`--config 'model: {lr: 0.01}'`), is left
    to jsonargparse."""
    import yaml

    given = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    given += [arg.removeprefix("--config=") for arg in argv if arg.startswith("--config=")]
    for name in given:
        path = Path(name)
        if not path.exists() and (path.suffix in (".yaml", ".yml") or ":" not in name):  # a word is not settings
            raise ConfigError(f"--config {name}: no such file{_experiments_hint(path)}")
        if path.is_dir():
            raise ConfigError(f"--config {name}: a directory; pass a YAML file (a run's own is RUN_DIR/config.yaml; "
                              "--resume RUN_DIR continues a run)")
        if not path.is_file():
            continue
        try:
            settings = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"--config {name}: not a YAML file but binary (a checkpoint goes to --ckpt_path FILE, "
                              "a run to continue to --resume RUN_DIR)") from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f"line {mark.line + 1}: " if mark is not None else ""
            problem = getattr(error, "problem", None) or _shown(error)
            raise ConfigError(f"--config {name}: not valid YAML ({where}{problem}); a config maps settings to "
                              "values, as experiments/*.yaml and a run's config.yaml do") from None
        if not isinstance(settings, dict):
            held = "nothing" if settings is None else _shown(repr(settings), 40)
            raise ConfigError(f"--config {name}: holds {held}, not settings; a config maps them to values, e.g. "
                              "`model: {lr: 0.01}` (experiments/*.yaml are examples)")
        nested = [key for key in settings if key in LIGHTNING_COMMANDS]
        if nested and argv[0] in LIGHTNING_COMMANDS:  # was "does not accept option 'fit.trainer.max_epochs'"
            raise ConfigError(f"--config {name}: its settings sit under `{nested[0]}:`, the layout of a config given "
                              f"before the command (`python -m prevpos --config {name} {nested[0]}`): give it there, "
                              f"or drop the `{nested[0]}:` level")
        for section, example in SECTION_EXAMPLES.items():  # jsonargparse ignored `data: 3`, or failed deep inside
            if section in settings and settings[section] is None:  # was "Unexpected config: model:"
                raise ConfigError(f"--config {name}: {section}: holds no settings; indent them below it, e.g. "
                                  f"`{section}: {example}`, or remove the line")
            if settings.get(section) is not None and not isinstance(settings[section], dict):
                raise ConfigError(f"--config {name}: {section}: {_shown(repr(settings[section]), 40)} is "
                                  f"not a group of settings; map its settings to values, e.g. `{section}: {example}`")
        if argv[0] == "fit" and "verbose" in settings:  # a setting of validate and test only
            _refuse_an_evaluations_config(path)


def _shown(value, at_most: int | None = None) -> str:
    """str(value) on one line (runs of whitespace, newlines too, as one space), cut at `at_most` characters."""
    return " ".join(str(value).split())[:at_most]


def _refuse_an_evaluations_config(path: Path) -> None:
    """The config.yaml that `prevpos validate|test` saved (RUN_DIR/test/version_N/config.yaml), given to fit."""
    command, run = evaluation_logged_in(path.parent), path.parent.parent.parent
    if command is None or not (run / "config.yaml").is_file():
        raise ConfigError(f"--config {path}: settings that `prevpos validate` or `test` saved, not a fit's")
    raise ConfigError(f"--config {path}: the settings `prevpos {command}` saved, not a fit's: the run's own are "
                      f"{run / 'config.yaml'}, and `--resume {run}` continues it")


def _experiments_hint(missing: Path) -> str:
    """The project's experiment config that `missing` names (`two_heads`, or `experiments/two_heads.yaml` given from
    another directory), else where they are, when this package runs from its source tree."""
    folder = Path(__file__).resolve().parent.parent / "experiments"
    meant = folder / f"{missing.stem}.yaml"
    if meant.is_file():
        return f" (did you mean --config {meant}?)"
    names = sorted(p.name for p in folder.glob("*.yaml"))
    return f" (the experiments are in {folder}: {', '.join(names)})" if names else ""


def as_config_error(error: Exception) -> ConfigError | None:
    """The ConfigError behind an instantiation failure, or the failure itself as one; None for anything else."""
    seen = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    inner = error.__cause__ or error.__context__
    callbacks = _shown(error).startswith(
        "Does not validate against any of the Union subtypes Subtypes: [list[lightning.pytorch.callbacks.")
    if callbacks and isinstance(inner, Exception):  # a callback's own check in its __init__ refused a value
        raised_by = _raised_by(inner)
        return ConfigError(f"trainer.callbacks: {raised_by + ': ' if raised_by else ''}{_shown(inner)}")
    if isinstance(error, (ValueError, TypeError, MisconfigurationException)):
        message = _shown(error)
        for pattern, wording in LIGHTNING_PATTERNS:
            message = re.sub(pattern, wording, message)
        return ConfigError(LIGHTNING_WORDING.get(message, message))
    return None


def _raised_by(error: BaseException) -> str | None:
    """The class of the innermost method on `error`'s traceback (the __init__ that refused a value), if any."""
    name, frame = None, error.__traceback__
    while frame is not None:
        owner = frame.tb_frame.f_locals.get("self")
        name = type(owner).__name__ if owner is not None else name
        frame = frame.tb_next
    return name


# Lightning's lines that name a setting without its section (`max_epochs`, not trainer.max_epochs).
LIGHTNING_PATTERNS = [
    (r"^`(max_epochs|max_steps)` must be a non-negative integer or -1.*You passed in (-?\d+)\.$",
     r"trainer.\1=\2: must be at least 0, or -1 for no limit"),
    (r"^Invalid value for (save_top_k|every_n_train_steps|every_n_epochs)=(-?\d+)\. Must be >= (-?\d+)$",
     r"checkpoint.\1=\2: must be >= \3"),
    (r"^`mode` can be (.+) but got (.+)$", r"checkpoint.mode=\2: must be one of \1"),
    (r"^Combination of parameters every_n_train_steps=(\S+), every_n_epochs=(\S+) and train_time_interval=(\S+) "
     r"should be mutually exclusive\.$",
     r"checkpoint.every_n_train_steps=\1, checkpoint.every_n_epochs=\2, checkpoint.train_time_interval=\3: give one "
     r"of them (with none, a checkpoint every epoch)"),
]

# Lightning's lines that name neither the setting nor the fix.
LIGHTNING_WORDING = {
    "No supported gpu backend found!": "trainer.accelerator=gpu: torch finds no GPU on this machine (no CUDA, no MPS): "
                                       "use --trainer.accelerator cpu, or auto (a GPU where there is one)",
}


def _callback_error(message: str) -> str:
    from prevpos.registry import discover_plugins

    plugins = discover_plugins()
    # Checked first: jsonargparse then also tries the value on the base class, which "has no option" of that name.
    value = _init_arg_problem(message)
    if value:
        return f"trainer.callbacks: {value}"
    option = re.search(r"class_path '([\w.]+)': (?:Option|Key) '([\w.]+)' is not accepted", message)
    if option:
        short = option.group(1).rsplit(".", 1)[-1]
        accepted = ", ".join(_init_options(plugins.get(short))) or "see its --help"
        return f"trainer.callbacks: {short} has no option '{option.group(2)}' (its options: {accepted})"
    name = re.search(r"import path string: ([\w.]+)", message) or re.search(r"'class_path': '([\w.]+)'", message)
    if name:
        return f"trainer.callbacks: {_unknown_callback(name.group(1))}"
    first = re.search(r"Errors: - (.*?)(?: - |$)", message)
    return f"trainer.callbacks: {first.group(1) if first else message}"


def _init_arg_problem(message: str) -> str | None:
    """"CLASS option KEY=VALUE: expected TYPE" (or the problem, tidied) for a class_path's init_args value that
    jsonargparse refused, from its message, which goes on to list the other forms it tried for the whole setting (a
    list of callbacks, a logger's iterable, bool or null); None if no init_args value was refused."""
    head = r"class_path '([\w.]+)': Parser key \"([\w.]+)\": "
    rest = (r"(?= - Not a valid subclass| - Problem with| - Expected a <class "
            r"'(?:collections\.abc\.Iterable|bool|NoneType)'>|$)")
    # Optional[int] and the like: the union's own errors, then the value, then the forms tried for the whole setting
    union = re.search(head + r"Does not validate against any of the Union subtypes Subtypes: \[(.*?)\] Errors: .*? "
                      r"Given value: (.*?)" + rest, message)
    if union:
        short, key, types, value = union.groups()
        return f"{short.rsplit('.', 1)[-1]} option {key}={value}: expected {_type_names(types)}"
    typed = re.search(head + r"Expected a <class '([\w.]+)'>\. Got value: (.*?)" + rest, message)
    if typed:
        short, key, expected, value = typed.groups()
        return f"{short.rsplit('.', 1)[-1]} option {key}={value}: expected {expected}"
    other = re.search(head + r"(.*?)" + rest, message)
    if other is None:
        return None
    short, key, problem = other.groups()
    tidied = re.sub(r"<class '([\w.]+)'>", r"\1", problem)
    return f"{short.rsplit('.', 1)[-1]} option {key}: {tidied}"


def _type_names(listed: str) -> str:
    """"str or Path" from jsonargparse's "<class 'str'>, <class 'pathlib.Path'>"."""
    return " or ".join(re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", name).replace("NoneType", "null")
                       for name in listed.split(", "))


def _unknown_callback(name: str) -> str:
    from prevpos.registry import class_path_here, discover_plugins

    plugins = discover_plugins()
    here = class_path_here(name)
    close = [here] if here else difflib.get_close_matches(name, list(plugins), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? " if close else ""
    return (f"no plugin or callback named '{name}' ({hint}available plugins: {', '.join(sorted(plugins))}; other "
            "callbacks by full class path, e.g. lightning.pytorch.callbacks.EarlyStopping)")


def _unknown_logger(name: str) -> str:
    import lightning.pytorch.loggers

    # By lower-case name: "tensorboard" is TensorBoardLogger.
    loggers = {n.lower(): n for n in lightning.pytorch.loggers.__all__ if n.endswith("Logger") and n != "Logger"}
    close = difflib.get_close_matches(name.lower(), list(loggers), n=1, cutoff=0.6)
    hint = f"did you mean {loggers[close[0]]}? " if close else ""
    return (f"no logger named '{name}' ({hint}Lightning's: {', '.join(sorted(loggers.values()))}; others by full "
            "class path; false for none)")


def _option_names(parser) -> list[str]:
    names = [s.lstrip("-") for action in parser._actions for s in action.option_strings]
    for action in parser._actions:
        for sub in getattr(action, "_name_parser_map", {}).values():
            names += _option_names(sub)
    return names


def _init_options(cls) -> list[str]:
    """Constructor arguments of `cls`, following **kwargs up to the base classes that take them."""
    names: list[str] = []
    for klass in (cls.__mro__ if cls is not None else []):
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names += [p.name for p in params if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return list(dict.fromkeys(names))
