"""Bad input: one line on stderr naming the problem and the fix, exit code 2, no traceback, no run touched."""

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from prevpos.cli import main
from prevpos.errors import out_of_memory
from prevpos.module import PrevTokenModel
from prevpos.transformer import HookedTransformer, HookedTransformerConfig

RUN = Path("lightning_logs/default/version_0")
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TINY = ["--trainer.max_epochs=1", "--data.steps_per_epoch=2", "--data.batch_size=16", "--data.val_size=32",
        "--data.probe_size=16", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.callbacks=[]"]

# (id, argv, what the one line must say). Files named here are made by the `workspace` fixture.
CASES = [
    ("lr_negative", ["fit", "--model.lr=-1"], "model.lr=-1.0: the learning rate must be positive"),
    ("lr_not_a_number", ["fit", "--model.lr=fast"], "Parser key \"model.lr\": Expected a <class 'float'>. Got value: fast"),
    ("weight_decay_negative", ["fit", "--model.weight_decay=-0.1"], "model.weight_decay=-0.1: must be >= 0"),
    ("min_lr_ratio_above_1", ["fit", "--model.min_lr_ratio=2"], "model.min_lr_ratio=2.0 must be in [0, 1]"),
    ("beta_of_2", ["fit", "--model.betas=[0.9, 2.0]"], "model.betas=[0.9, 2.0]: each must be in [0, 1)"),
    ("beta_of_1", ["fit", "--model.betas=[1.0, 0.999]"], "model.betas=[1.0, 0.999]: each must be in [0, 1)"),
    ("accelerator_gpu_without_one", ["fit", "--trainer.accelerator=gpu"],
     "trainer.accelerator=gpu: torch finds no GPU on this machine (no CUDA, no MPS): use --trainer.accelerator cpu"),
    ("warmup_negative", ["fit", "--model.warmup_steps=-1"], "model.warmup_steps=-1: must be >= 0 (0: no warm-up)"),
    ("betas_one_value", ["fit", "--model.betas=[0.9]"], "Expected a tuple with 2 elements"),
    ("positional_unknown", ["fit", "--model.positional=sinusoid"], "Expected a typing.Literal['none', 'learned']"),
    ("batch_size_zero", ["fit", "--data.batch_size=0"], "data.batch_size=0: must be at least 1"),
    ("n_tokens_too_many", ["fit", "--data.n_tokens=500"], "data.n_tokens=500: must be in [2, d_vocab-1=100]"),
    ("max_epochs_not_int", ["fit", "--trainer.max_epochs=many"], "trainer.max_epochs: expected int or null, got many"),
    ("precision_float16_weights", ["fit", "--trainer.precision=16-true"], "AdamW cannot train float16 weights"),
    ("barebones_with_the_default_logger", ["fit", "--trainer.barebones=true"],
     "trainer.barebones=true turns logging off, and prevpos logs to TensorBoard every 5 steps by default: add "
     "--trainer.logger false --trainer.log_every_n_steps 0"),
    ("batches_per_step_without_fast", ["fit", "--data.batches_per_step=4"], "data.batches_per_step=4 needs model.fast"),
    # Lightning's MisconfigurationException traceback from inside fit, "Automatic gradient clipping is not supported"
    ("fast_with_trainer_clipping", ["fit", "--model.fast=FastStep"],
     "model.fast clips inside its own step (model.fast.clip): add --trainer.gradient_clip_val null (it is 1.0;"),
    ("fast_clip_zero", ["fit", "--model.fast=FastStep", "--model.fast.clip=0", "--trainer.gradient_clip_val=null"],
     "model.fast.clip=0.0: the largest gradient norm must be positive; null for no clipping"),  # trained nothing
    # Overflow tracebacks, after the run folder was made (data.seed); init_seed's line named no setting
    ("data_seed_too_large", ["fit", "--data.seed=99999999999999999999999"],
     "data.seed=99999999999999999999999: too large for torch's random generator; use a seed below 2**62"),
    ("probe_seed_too_large", ["fit", "--data.probe_seed=-99999999999999999999999"], "data.probe_seed=-99999"),
    ("init_seed_too_large", ["fit", "--model.init_seed=99999999999999999999999"], "model.init_seed=99999"),
    ("analyze_probe_seed_too_large", ["analyze", "--weights", str(RUN / "checkpoints" / "last.ckpt"), "--out", "x",
                                      "--probe_seed=99999999999999999999999"], "--probe_seed=99999"),
    # Allocated and filled until the OS killed the process ("Killed", helper-17 stopped one at 5.9 GB); a probe
    # beyond torch's reach was a one-line out-of-memory error after the probe line
    ("probe_larger_than_memory", ["fit", "--data.probe_size=100000000"],
     "data.probe_size=100000000: analysing 100,000,000 sequences would hold ~13.5 TB of activations (135.4 kB a "
     "sequence for this model), more than this machine's"),
    ("analyze_probe_larger_than_memory", ["analyze", "--weights", str(RUN / "checkpoints" / "last.ckpt"), "--out",
                                          "x", "--probe_size=10000000000000"],
     "--probe_size=10000000000000: analysing"),
    ("fast_with_mixed_precision", ["fit", "--model.fast={}", "--trainer.gradient_clip_val=null",
                                   "--trainer.precision=bf16-mixed"], "model.fast needs trainer.precision 32-true"),
    ("accelerator_unknown", ["fit", "--trainer.accelerator=tpuu"], "invalid accelerator name: `accelerator='tpuu'`"),
    ("devices_zero", ["fit", "--trainer.devices=0"],
     "trainer.devices=0: Lightning needs at least one device: use a count (1, 2, ...), -1 for all, or auto"),
    ("devices_zero_in_test", ["test", "--trainer.devices=0", "--ckpt_path", str(RUN / "checkpoints" / "last.ckpt")],
     "trainer.devices=0: Lightning needs at least one device"),
    ("accumulate_zero", ["fit", "--trainer.accumulate_grad_batches=0"],
     "trainer.accumulate_grad_batches=0: must be at least 1"),
    ("validate_every_0_epochs", ["fit", "--trainer.check_val_every_n_epoch=0"],
     "trainer.check_val_every_n_epoch=0: must be at least 1, or null"),
    ("validate_every_0_steps", ["fit", "--trainer.val_check_interval=0"],
     "trainer.val_check_interval=0: a number of steps must be at least 1"),
    ("validate_past_the_epoch", ["fit", "--trainer.val_check_interval=20"],
     ("trainer.val_check_interval=20 is more steps than an epoch has (10, data.steps_per_epoch): use at most that, "
      "or add --trainer.check_val_every_n_epoch null")),
    ("validate_past_the_limited_epoch", ["fit", "--trainer.val_check_interval=5", "--trainer.limit_train_batches=3"],
     "more steps than an epoch has (3, trainer.limit_train_batches)"),
    ("monitor_unknown", ["fit", "--checkpoint.monitor=val_acc"],
     "checkpoint.monitor=val_acc: fit logs no such metric (did you mean val/acc? it logs train/loss, train/acc, "),
    ("early_stopping_monitor_unknown", ["fit", "--trainer.callbacks+=EarlyStopping",
                                        "--trainer.callbacks.monitor=val/accuracy"],
     "EarlyStopping.monitor=val/accuracy: fit logs no such metric (did you mean val/acc?"),
    ("seed_negative", ["fit", "--seed_everything=-1"],
     "seed_everything: -1 is not in bounds, numpy accepts from 0 to 4294967295 (or true: a random seed; false: none)"),
    ("checkpoint_every_negative", ["fit", "--checkpoint.every_n_epochs=-1"],
     "checkpoint.every_n_epochs=-1: must be >= 0"),
    ("checkpoint_top_k_below_minus_1", ["fit", "--checkpoint.save_top_k=-2"],
     "checkpoint.save_top_k=-2: must be >= -1"),
    ("max_epochs_below_minus_1", ["fit", "--trainer.max_epochs=-5"],
     "trainer.max_epochs=-5: must be at least 0, or -1 for no limit"),
    ("max_steps_below_minus_1", ["fit", "--trainer.max_steps=-7"],
     "trainer.max_steps=-7: must be at least 0, or -1 for no limit"),
    ("section_misspelled", ["fit", "--modle.lr=1"], "unrecognized arguments: --modle.lr=1 (did you mean --model.lr?)"),
    ("key_misspelled", ["fit", "--model.nlayers=3"], "(did you mean --model.n_layers?)"),
    ("config_missing", ["fit", "--config", "nope.yaml"], "--config nope.yaml: no such file (the experiments are in "),
    # a bare word was jsonargparse's "File does not exist"; an experiment's name, from anywhere, finds its file
    ("config_missing_no_suffix", ["fit", "--config", "nope"], "--config nope: no such file (the experiments are in "),
    ("config_experiment_by_name", ["fit", "--config", "two_heads"],
     f"--config two_heads: no such file (did you mean --config {EXPERIMENTS / 'two_heads.yaml'}?)"),
    ("config_experiment_elsewhere", ["fit", "--config", "experiments/two_heads.yaml"],
     f"--config experiments/two_heads.yaml: no such file (did you mean --config {EXPERIMENTS / 'two_heads.yaml'}?)"),
    ("config_malformed", ["fit", "--config", "malformed.yaml"],
     "--config malformed.yaml: not valid YAML (line 2: expected ',' or ']', but got ':'); a config maps settings"),
    # a checkpoint given as a config was a UnicodeDecodeError traceback
    ("config_a_checkpoint", ["fit", "--config", str(RUN / "checkpoints" / "last.ckpt")],
     "last.ckpt: not a YAML file but binary (a checkpoint goes to --ckpt_path FILE"),
    ("config_a_list", ["fit", "--config", "a_list.yaml"],
     "--config a_list.yaml: holds ['model', 'data'], not settings"),
    ("config_a_run_directory", ["test", "--config", str(RUN)], f"--config {RUN}: a directory; pass a YAML file"),
    # LightningCLI's layout for `--config FILE fit`, given after the command: "did you mean --trainer.max_epochs?"
    ("config_under_the_command", ["fit", "--config", "under_fit.yaml"], "--config under_fit.yaml: its settings sit "
     "under `fit:`, the layout of a config given before the command (`python -m prevpos --config under_fit.yaml fit`): "
     "give it there, or drop the `fit:` level"),
    ("config_unknown_key", ["fit", "--config", "unknown_key.yaml"], "(did you mean --model.n_layers?)"),
    ("config_wrong_type", ["fit", "--config", "wrong_type.yaml"], "Parser key \"data.batch_size\": Expected a <class 'int'>"),
    # jsonargparse trained with the default data for `data: 3`, and `trainer: 3` stopped with a traceback
    ("config_an_empty_group", ["fit", "--config", "empty_section.yaml"],  # was "Unexpected config: model:"
     "--config empty_section.yaml: model: holds no settings; indent them below it, e.g. `model: {lr: 0.01}`, or "
     "remove the line"),
    ("config_a_group_not_a_mapping", ["fit", "--config", "a_number.yaml"], "--config a_number.yaml: data: 3 is not a "
     "group of settings; map its settings to values, e.g. `data: {batch_size: 256}`"),
    ("config_trainer_not_a_mapping", ["fit", "--config", "trainer_a_list.yaml"],
     "--config trainer_a_list.yaml: trainer: ['max_epochs', 5] is not a group of settings"),
    ("plugin_unknown", ["fit", "--trainer.callbacks+=OVCircuits"],
     "no plugin or callback named 'OVCircuits' (did you mean OVCircuit? available plugins: AdversarialExamples"),
    ("plugin_bad_value", ["fit", "--trainer.callbacks+=AttentionPatterns", "--trainer.callbacks.every_n_epochs=0"],
     "AttentionPatterns.every_n_epochs=0: must be at least 1"),
    ("plugin_unknown_option", ["fit", "--trainer.callbacks+=AttentionPatterns", "--trainer.callbacks.nope=0"],
     "AttentionPatterns has no option 'nope' (its options: example, every_n_epochs, dense_epochs, figure_every_n_epochs, dense_figure_every_n_epochs, strict)"),
    # a list typed without quotes, cut by the shell at its space: was "trainer.callbacks: Expected a <class 'list'>"
    ("list_cut_by_the_shell", ["fit", "--trainer.callbacks+=[HeadAblation,", "LogitAttribution]"],
     "--trainer.callbacks+: the shell cut its value at a space ('[HeadAblation,' is only its start); quote the whole "
     "value (e.g. \"--trainer.callbacks+=[A, B]\") or leave the spaces out (--trainer.callbacks+=[A,B])"),
    ("list_cut_by_the_shell_after_the_option", ["fit", "--model.betas", "[0.9,", "0.99]"],
     "--model.betas: the shell cut its value at a space ('[0.9,' is only its start)"),
    ("config_text_cut_by_the_shell", ["fit", "--config", "model:", "{lr:", "0.01}"],
     "--config: the shell cut its value at a space ('{lr:' is only its start); quote the whole value"),
    # a callback's own check in its __init__: was jsonargparse's "Does not validate against any of the Union
    # subtypes ..." paragraph, with the whole callback list in it
    ("callback_refuses_a_value", ["fit", "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val/acc",
                                  "--trainer.callbacks.mode=maxi"],
     "trainer.callbacks: EarlyStopping: `mode` can be min, max, got maxi"),
    ("plugin_option_wrong_type", ["fit", "--trainer.callbacks+=LengthGeneralization", "--trainer.callbacks.sequences=x"],
     "trainer.callbacks: LengthGeneralization option sequences=x: expected int"),  # was "Callback has no option"
    # kept the run's worst checkpoint as its best, with nothing said
    # Lightning's lines, without the section's name
    # jsonargparse's list of the forms it tried followed the value; the logger's line ended at "Errors:"
    ("plugin_option_mistyped_in_a_config", ["fit", "--config", "plugin_option_mistyped.yaml"],
     "trainer.callbacks: OVCircuit option every_n_epochs=abc: expected int (`python -m prevpos fit --help`"),
    ("logger_option_mistyped_in_a_config", ["fit", "--config", "logger_option_mistyped.yaml"],
     "trainer.logger: TensorBoardLogger option save_dir=3: expected str or Path (`python -m prevpos fit --help`"),
    ("plugin_option_of_an_optional_type_mistyped", ["fit", "--config", "plugin_optional_option_mistyped.yaml"],
     "trainer.callbacks: AdversarialExamples option size=abc: expected int or null (`python -m prevpos fit --help`"),
    ("checkpoint_mode_misspelt", ["fit", "--checkpoint.mode=maxi"], "checkpoint.mode=maxi: must be one of min, max"),
    ("checkpoint_two_triggers", ["fit", "--checkpoint.every_n_train_steps=3", "--checkpoint.every_n_epochs=1"],
     "checkpoint.every_n_train_steps=3, checkpoint.every_n_epochs=1, checkpoint.train_time_interval=None: give one of "
     "them (with none, a checkpoint every epoch)"),
    ("checkpoint_on_a_loss_the_wrong_way", ["fit", "--checkpoint.monitor=val/loss"], "checkpoint.monitor=val/loss with "
     "checkpoint.mode=max: it would take the highest val/loss for the best; add --checkpoint.mode min"),
    ("early_stopping_on_acc_the_wrong_way", ["fit", "--trainer.callbacks+=EarlyStopping",
                                             "--trainer.callbacks.monitor=val/acc"],
     "EarlyStopping.monitor=val/acc with EarlyStopping.mode=min: it would take the lowest val/acc for the best; add "
     "--trainer.callbacks.mode max"),
    # a new run, branched from the checkpoint, wrote its last.ckpt over that run's
    ("new_run_over_its_checkpoints_run", ["fit", "--ckpt_path", str(RUN / "checkpoints" / "last.ckpt"),
                                          "--checkpoint.dirpath", str(RUN / "checkpoints")],
     f"checkpoint.dirpath {RUN / 'checkpoints'}: holds the checkpoints of the run --ckpt_path starts from, and this "
     "fit is a new run, which would write over them"),
    # wrote the new epochs elsewhere: the next --resume went back to the run's old last.ckpt
    ("resume_writing_elsewhere", ["fit", "--resume", str(RUN), "--checkpoint.dirpath", "elsewhere"],
     f"--resume {RUN}: a resumed run writes its checkpoints where it did, in {RUN / 'checkpoints'}: drop "
     "--checkpoint.dirpath"),
    # yaml's ScannerError, and AttributeError for a list: tracebacks
    ("resume_a_hand_broken_config", ["fit", "--resume", "lightning_logs/tab/version_0"],
     "--resume: lightning_logs/tab/version_0/config.yaml is not valid YAML (line "),
    # said the run stopped before its first checkpoint, and to start it again
    ("resume_a_run_that_kept_no_last_ckpt", ["fit", "--resume", "lightning_logs/no_last/version_0"],
     "--resume lightning_logs/no_last/version_0: the run kept no last.ckpt (checkpoint.save_last false?), which "
     "--resume continues; to go on from its newest checkpoint, in a new run: `python -m prevpos fit --config "
     "lightning_logs/no_last/version_0/config.yaml --ckpt_path lightning_logs/no_last/version_0/checkpoints/best.ckpt`"),
    # named --ckpt_path, which the user did not type, and pointed at no way on
    # (and its command left out the options given: the config's max_epochs was the first session's)
    ("resume_a_last_ckpt_cut_short", ["fit", "--resume", "lightning_logs/cut_short/version_0",
                                      "--trainer.max_epochs", "6", "--model.lr=1e-3"],
     "--resume lightning_logs/cut_short/version_0: lightning_logs/cut_short/version_0/checkpoints/last.ckpt: not a "
     "readable checkpoint (not a complete zip archive written by torch.save: another kind of file, or one cut short); "
     "to go on from its newest other checkpoint, in a new run: `python -m prevpos fit --config "
     "lightning_logs/cut_short/version_0/config.yaml --ckpt_path lightning_logs/cut_short/version_0/checkpoints/"
     "best.ckpt --trainer.max_epochs 6 --model.lr=1e-3`"),
    # a no-BOS run was analysed on the tutorial's sample, every sequence of which begins with BOS
    ("notebook_probe_without_bos", ["fit", "--data.bos=false", "--data.notebook_probe=true"],
     "data.notebook_probe=true: the tutorial's sample begins every sequence with BOS, and data.bos=false trains "
     "without it; drop one of the two (a run saved with both: --data.notebook_probe false)"),
    ("resume_a_config_made_a_list", ["fit", "--resume", "lightning_logs/listed/version_0"],
     "--resume: lightning_logs/listed/version_0/config.yaml is not a fit config"),
    ("checkpoints_among_another_run_s", ["fit", "--checkpoint.dirpath", str(RUN / "checkpoints")],
     f"checkpoint.dirpath {RUN / 'checkpoints'}: already holds another run's checkpoints (best-"),
    ("logger_misspelt", ["fit", "--trainer.logger", "Tensorboard"], "trainer.logger: no logger named 'Tensorboard' "
     "(did you mean TensorBoardLogger? Lightning's: CSVLogger, CometLogger, "),
    ("logger_not_importable", ["fit", "--trainer.logger", "mine.Logger"],
     "trainer.logger: cannot use mine.Logger: No module named 'mine'"),
    # TensorBoardLogger hands it to torch's SummaryWriter untyped: a TypeError traceback once the run had started
    ("logger_writer_setting_mistyped", ["fit", "--trainer.logger.max_queue", "abc"],
     "trainer.logger.max_queue='abc': TensorBoard's writer needs a whole number (its default: 10)"),
    ("logger_writer_setting_mistyped_in_test", ["test", "--trainer.logger.flush_secs=[1]", "--ckpt_path",
                                                str(RUN / "checkpoints" / "last.ckpt")],
     "trainer.logger.flush_secs=[1]: TensorBoard's writer needs a number of seconds"),
    ("ckpt_missing", ["fit", "--ckpt_path", "missing.ckpt"], "--ckpt_path missing.ckpt: no such file"),
    ("ckpt_a_run_directory", ["validate", "--ckpt_path", str(RUN)],
     f"--ckpt_path {RUN}: a directory; pass a checkpoint file, e.g. {RUN / 'checkpoints' / 'last.ckpt'}"),
    ("ckpt_truncated", ["fit", "--ckpt_path", "truncated.ckpt"], "--ckpt_path truncated.ckpt: not a readable "
     "checkpoint (not a complete zip archive written by torch.save: another kind of file, or one cut short)"),
    ("ckpt_not_torch", ["validate", "--ckpt_path", "notes.txt"],
     "--ckpt_path notes.txt: not a readable checkpoint (not a complete zip"),
    ("ckpt_a_whole_model", ["validate", "--ckpt_path", "whole_model.pt"], "--ckpt_path whole_model.pt: not a readable "
     "checkpoint (a pickled PrevTokenModel object, not weights); pass a .ckpt file saved by `python -m prevpos fit`"),
    # said "does not accept option 'model.foo'": an option the user never typed
    ("ckpt_of_another_version", ["test", "--ckpt_path", "another_version.ckpt"], "--ckpt_path another_version.ckpt: "
     "saved with model settings this prevpos does not take (foo; from another version of it?)"),
    ("ckpt_wrong_shape", ["fit", "--ckpt_path", "other_model.ckpt"],
     "--ckpt_path other_model.ckpt: its weights do not fit this model (model.embed.W_E (101, 64) vs (101, 128))"),
    ("validate_no_checkpoint", ["validate"], "validate --ckpt_path: pass a checkpoint file of a fit"),
    ("test_best_in_a_new_process", ["test", "--ckpt_path", "best"], "test --ckpt_path best: Lightning's name for "
     "the checkpoint of an earlier fit with the same trainer, and this command has none; pass a checkpoint file"),
    ("validate_last_in_a_new_process", ["validate", "--ckpt_path", "last"], "validate --ckpt_path last: Lightning's"),
    # fit trained from scratch in a new run for `last` (with a warning of Lightning's), and `best` was a traceback
    ("fit_from_last_in_a_new_process", ["fit", "--ckpt_path", "last"], "fit --ckpt_path last: Lightning's name for "
     "the checkpoint of an earlier fit with the same trainer, and this command has none; to continue a run use "
     "--resume RUN_DIR; to start from a checkpoint, pass its file (e.g. "),
    ("fit_from_best_in_a_new_process", ["fit", "--ckpt_path", "best"], "fit --ckpt_path best: Lightning's name"),
    ("command_unknown", ["fitt"], "unknown command 'fitt': use one of fit, validate, test, analyze, report, bench"),
    ("command_predict", ["predict"], "unknown command 'predict'"),
    ("resume_missing_dir", ["fit", "--resume", "lightning_logs/default/version_9"], "version_9/config.yaml does not exist"),
    ("resume_with_config", ["fit", "--resume", str(RUN), "--config", "x.yaml"], "drop --config"),
    ("resume_a_checkpoint", ["fit", "--resume", str(RUN / "checkpoints" / "last.ckpt")],
     f"a file; --resume takes the run's directory (it continues from RUN_DIR/checkpoints/last.ckpt): --resume {RUN}"),
    ("analyze_a_run_directory", ["analyze", "--weights", str(RUN), "--out", "x"],
     f"--weights {RUN}: a directory; pass a checkpoint file, e.g. {RUN / 'checkpoints' / 'last.ckpt'}"),
    ("report_a_checkpoint", ["report", str(RUN / "checkpoints" / "last.ckpt")], f"a file; pass its run's directory, {RUN}"),
    ("resume_the_runs_parent", ["fit", "--resume", "lightning_logs/default"], "It holds the runs version_0: pass one."),
    ("plugin_help_misspelt", ["fit", "--trainer.callbacks.help", "Explanatoin"],  # said "Expected a dot import path"
     "--trainer.callbacks.help Explanatoin: no plugin or callback named 'Explanatoin' (did you mean Explanation?"),
    ("logger_help_misspelt", ["fit", "--trainer.logger.help", "tensorbord"],
     "--trainer.logger.help tensorbord: no logger named 'tensorbord' (did you mean TensorBoardLogger?"),
    ("checkpoint_folder_a_file", ["fit", "--checkpoint.dirpath", "notes.txt/best"],  # failed at the first save
     "checkpoint.dirpath notes.txt/best: notes.txt is a file, not a folder; pass a folder for the checkpoints"),
    ("config_of_a_test", ["fit", "--config", str(RUN / "test" / "version_0" / "config.yaml")],  # "did you mean --verbose?"
     f"the settings `prevpos test` saved, not a fit's: the run's own are {RUN / 'config.yaml'}, and `--resume {RUN}`"),
    ("option_of_another_command", ["fit", "--verbose=true"],  # "(did you mean --verbose?)": test's, not fit's
     "unrecognized arguments: --verbose=true (`python -m prevpos fit --help` lists the options)"),
    ("resume_a_tests_log", ["fit", "--resume", str(RUN / "test" / "version_0")],  # said: start it again with --config
     f"the log of `prevpos test`, not of a training run; to go on training the run it evaluated: --resume {RUN}"),
    ("resume_a_loose_tests_log", ["fit", "--resume", "lightning_logs/default/test/version_0"],
     "the log of `prevpos test`, not of a training run; --resume takes a training run's directory"),
    ("new_run_in_existing_dir", ["fit", "--trainer.logger.init_args.version=version_0"], "already holds a run"),
    ("analyze_out_a_file", ["analyze", "--weights", str(RUN / "checkpoints" / "last.ckpt"), "--out", "notes.txt"],
     "--out notes.txt: exists, a file; pick a new directory (analyze never overwrites files)"),
    # ran every analysis, then "the file system refused notes.txt: File exists"
    ("analyze_out_under_a_file", ["analyze", "--weights", str(RUN / "checkpoints" / "last.ckpt"), "--out",
                                  "notes.txt/analysis"],
     "--out notes.txt/analysis: notes.txt is a file, not a folder; pick a directory whose parents are folders"),
    ("analyze_nothing_given", ["analyze"], "analyze: needs --weights FILE (a checkpoint of a fit, e.g. "
     "lightning_logs/default/version_0/checkpoints/last.ckpt) and --out DIR (a new directory for the results)"),
    ("analyze_not_a_checkpoint", ["analyze", "--weights", "notes.txt", "--out", "analysis"],
     "not a torch file of weights (not a complete zip"),
    ("analyze_layer_norm_weights", ["analyze", "--weights", "layer_norm_state_dict.pt", "--out", "analysis"],
     "does not fit the model (unexpected blocks.0.ln1.w;"),
    # every plugin failed, each blamed for changing the weights (NaN is not equal to itself); "probe loss nan"
    ("analyze_nan_weights", ["analyze", "--weights", "nan_state_dict.pt", "--out", "analysis"],
     "--weights nan_state_dict.pt: embed.W_E holds NaN or inf (a model that diverged), so every analysis of it would be "
     "NaN; analyse an earlier checkpoint of the run"),
    # a TypeError traceback from the model's own checks
    ("analyze_mistyped_settings", ["analyze", "--weights", "mistyped_settings.ckpt", "--out", "analysis"],
     "--weights mistyped_settings.ckpt: its saved settings do not make a prevpos model ('<' not supported between "
     "instances of 'str' and 'int'); is it a checkpoint of `python -m prevpos fit`?"),
    # said it was a raw state_dict
    ("analyze_another_projects_checkpoint", ["analyze", "--weights", "another_project.ckpt", "--out", "analysis"],
     "--weights another_project.ckpt: does not fit the model (model.embed.W_E is missing; 21 difference(s)); a "
     "Lightning checkpoint of another model (is it of `python -m prevpos fit`?)"),
    ("analyze_unknown_plugin", ["analyze", "--weights", str(RUN / "checkpoints" / "last.ckpt"), "--out", "analysis",
                                "--plugins", "OVCircuit", "OVCircuits"], "--plugins: no plugin named OVCircuits"),
    ("report_unknown_option", ["report", str(RUN), "--bogus"],
     "report: unrecognized arguments: --bogus (`python -m prevpos report --help` lists the options)"),
    # AttributeError and UnicodeDecodeError tracebacks
    ("report_a_config_section_made_a_number", ["report", "edited/model_a_number"],
     "edited/model_a_number/config.yaml: model: 5 is not a group of settings (fit writes a mapping there): mend it, "
     "or remove the line"),
    ("report_a_binary_config", ["report", "edited/binary"],
     "edited/binary/config.yaml is not text (a damaged file?): mend it, or move it aside"),
    ("report_a_file", ["report", "notes.txt"], "notes.txt: a file, not a directory (report reads a run directory"),
    ("report_empty_dir", ["report", "empty"], "has no TensorBoard events"),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A directory holding one finished tiny run and the bad files the cases point at."""
    root = tmp_path_factory.mktemp("bad_input")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        main(["fit", *TINY])
    finally:
        os.chdir(cwd)
    last = root / RUN / "checkpoints" / "last.ckpt"
    for name, config in (("tab", (root / RUN / "config.yaml").read_text() + "trainer:\n\tmax_epochs: 4\n"),
                         ("listed", "- model\n- data\n")):  # a run's config.yaml, edited by hand
        (root / "lightning_logs" / name / "version_0" / "checkpoints").mkdir(parents=True)
        shutil.copy(last, root / "lightning_logs" / name / "version_0" / "checkpoints")
        (root / "lightning_logs" / name / "version_0" / "config.yaml").write_text(config)
    no_last = root / "lightning_logs" / "no_last" / "version_0"
    (no_last / "checkpoints").mkdir(parents=True)
    shutil.copy(last, no_last / "checkpoints" / "best.ckpt")
    shutil.copy(root / RUN / "config.yaml", no_last)
    (root / "truncated.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    cut_short = root / "lightning_logs" / "cut_short" / "version_0"  # the machine died while last.ckpt was written
    shutil.copytree(no_last, cut_short)
    (cut_short / "checkpoints" / "last.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (root / "notes.txt").write_text("not a checkpoint\n")
    for name in ("model_a_number", "binary"):  # a run's config.yaml, damaged
        shutil.copytree(root / RUN, root / "edited" / name)
    config = yaml.safe_load((root / RUN / "config.yaml").read_text())
    (root / "edited" / "model_a_number" / "config.yaml").write_text(yaml.safe_dump({**config, "model": 5}))
    (root / "edited" / "binary" / "config.yaml").write_bytes(b"\xff\xfe\x00\x01binary")
    other = PrevTokenModel(d_model=64, d_head=64)
    torch.save({"state_dict": other.state_dict()}, root / "other_model.ckpt")
    torch.save(other, root / "whole_model.pt")  # torch.save(model): a pickle of the whole module
    layer_norm = HookedTransformerConfig(n_layers=1, d_model=16, d_head=16, n_ctx=10, d_vocab=101, attn_only=True,
                                         normalization_type="LN")  # prevpos builds no LayerNorm
    torch.save(HookedTransformer(layer_norm).state_dict(), root / "layer_norm_state_dict.pt")
    another_version = torch.load(last, weights_only=True)
    another_version["hyper_parameters"]["foo"] = 1
    torch.save(another_version, root / "another_version.ckpt")
    diverged = PrevTokenModel().model.state_dict()
    diverged["embed.W_E"][3, 5] = float("nan")
    torch.save(diverged, root / "nan_state_dict.pt")
    torch.save({"state_dict": {}, "hyper_parameters": {"n_layers": "two"}}, root / "mistyped_settings.ckpt")
    torch.save({"state_dict": {"layer.weight": torch.zeros(3, 3)}, "hyper_parameters": {"hidden": 3, "lr": 0.1}},
               root / "another_project.ckpt")
    (root / "malformed.yaml").write_text("model: [1, 2\n  lr: : :\n")
    (root / "a_list.yaml").write_text("- model\n- data\n")
    (root / "unknown_key.yaml").write_text("model:\n  nlayers: 3\n")
    (root / "under_fit.yaml").write_text("fit:\n  trainer:\n    max_epochs: 2\n")
    (root / "wrong_type.yaml").write_text("data:\n  batch_size: big\n")
    (root / "a_number.yaml").write_text("model:\n  lr: 0.01\ndata: 3\n")
    (root / "empty_section.yaml").write_text("model:\ntrainer:\n  max_epochs: 2\n")
    (root / "trainer_a_list.yaml").write_text("trainer:\n  - max_epochs\n  - 5\n")
    (root / "plugin_option_mistyped.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: OVCircuit\n      init_args:\n        every_n_epochs: abc\n")
    (root / "logger_option_mistyped.yaml").write_text(
        "trainer:\n  logger:\n    class_path: TensorBoardLogger\n    init_args:\n      save_dir: 3\n")
    (root / "plugin_optional_option_mistyped.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: AdversarialExamples\n      init_args:\n        size: abc\n")
    (root / "empty").mkdir()
    for tested in (RUN / "test" / "version_0", Path("lightning_logs/default/test/version_0")):  # as `prevpos test` logs
        (root / tested).mkdir(parents=True)
        (root / tested / "config.yaml").write_text((root / RUN / "config.yaml").read_text() + "verbose: true\n")
    return root


def snapshot(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def refused(argv: list[str], root: Path, capsys) -> tuple[int, str]:
    """(exit code, stderr) of main(argv), run in `root`, which must exit and leave `root` as it was."""
    before = snapshot(root)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert snapshot(root) == before  # no run's files touched, nothing created
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(argv, expected, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    code, err = refused(argv, workspace, capsys)
    errors = [line for line in err.splitlines() if line.startswith("prevpos: error:")]
    assert code == 2, err
    assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
    assert "Traceback" not in err
    assert expected in errors[0], errors[0]


@pytest.mark.parametrize("variable, said", [("PREVPOS_ANALYSIS", "must be one of process, thread"),
                                             ("PREVPOS_RENDER", "must be one of process, thread, inline")])
def test_a_bad_analysis_or_render_place_is_one_line_before_anything_runs(variable, said, workspace, monkeypatch,
                                                                         capsys):
    """PREVPOS_RENDER=fork was a ValueError traceback at the first figure, after the run folder was made."""
    monkeypatch.chdir(workspace)
    monkeypatch.setenv(variable, "fork")
    code, err = refused(["fit", *TINY[:-1]], workspace, capsys)  # with the plugins, which draw figures
    assert code == 2 and err.strip().splitlines() == [err.strip()]
    assert err.startswith(f"prevpos: error: {variable}=fork: {said}")


def test_every_case_is_distinct_and_there_are_at_least_20():
    assert len({case[0] for case in CASES}) == len(CASES) >= 20


def test_real_command_line_prints_one_line_and_exits_2(workspace, tmp_path):
    shutil.copytree(workspace / "lightning_logs", tmp_path / "lightning_logs")
    result = subprocess.run([sys.executable, "-m", "prevpos", "fit", "--trainer.callbacks+=OVCircuits"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # exactly one line
    assert result.stderr.startswith("prevpos: error: trainer.callbacks: no plugin or callback named 'OVCircuits'")


@pytest.mark.parametrize("command", [["fit"], ["report", "."]])
def test_a_backend_matplotlib_refuses_is_one_line(command, tmp_path):
    """MPLBACKEND=bogus was matplotlib's ValueError traceback, at the import every command makes for its figures."""
    result = subprocess.run([sys.executable, "-m", "prevpos", *command], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "MPLBACKEND": "bogus"})
    assert (result.returncode, result.stderr) == (2, "prevpos: error: MPLBACKEND=bogus: not a matplotlib backend; "
                                                     "unset it, or name one, e.g. MPLBACKEND=Agg\n")
    assert not list(tmp_path.iterdir())  # no run folder


def test_running_out_of_memory_is_one_line_naming_the_sizes(workspace, monkeypatch, capsys):
    """A real allocation torch refuses on this CPU (tens of TiB). It was a traceback ending in a C++ assertion."""
    monkeypatch.chdir(workspace)
    code, err = refused(["fit", "--model.d_model=100000000000", *TINY], workspace, capsys)
    assert code == 1 and "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("prevpos: error:")]
    assert line.startswith("prevpos: error: out of memory on the CPU (it asked for ") and line.endswith(
        "lower data.batch_size (or data.val_size, data.probe_size), or the model's size (model.d_model, model.n_ctx, "
        "model.d_vocab)")
    # analyze names its own setting (a probe too big for any memory is refused before it runs: CASES)
    error = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 4000000000000 bytes.")
    assert out_of_memory(error, "analyze").endswith("lower --probe_size")


def test_a_gpu_out_of_memory_reads_as_one_line_too():
    """torch's CUDA message, as it words it (no GPU here to raise it for real); other errors are left alone."""
    error = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of "
                                   "79.11 GiB of which 3.12 GiB is free. Of the allocated memory 70.2 GiB is ...")
    assert out_of_memory(error, "bench") == "out of memory on a GPU (it asked for 20.00 GiB at once): lower --batch_size"
    assert out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), "fit") is None


def test_ctrl_c_outside_training_is_one_line_and_ends_the_process_by_sigint(workspace, tmp_path):
    """Ctrl-C while a command starts (imports take seconds) or analyses printed a KeyboardInterrupt traceback. It
    ends the process by SIGINT (a shell's status 130), so that a shell loop around the command stops as well.
    (Inside fit's training, Lightning stops gracefully and fit says how to resume: tests/test_cli.py.)"""
    command = [sys.executable, "-m", "prevpos", "analyze", "--weights",
               str(workspace / RUN / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "a")]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    # Inside main's imports (torch, Lightning, TransformerLens: seconds). A fixed 3 s wait was flaky: with the files
    # cached, analyze had finished by then. Between fork and exec the child still shows this test process's own
    # command and memory, torch included: a SIGINT sent then would be lost with the old image.
    started = "\0".join(command) + "\0"
    proc = Path(f"/proc/{process.pid}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (
            (proc / "cmdline").read_text() == started and "libtorch_cpu" in (proc / "maps").read_text()):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGINT, err
    assert err.strip().splitlines()[-1] == "prevpos: analyze stopped (Ctrl-C)"
    assert "Traceback" not in err and not (tmp_path / "a").exists()


def test_a_file_where_the_runs_folder_goes_is_one_line(in_tmp, capsys):
    """The file system refusing a write (here a file named lightning_logs; no space, no permission) was a
    traceback through Lightning's logger."""
    (in_tmp / "lightning_logs").write_text("my notes")
    code, err = refused(["fit", *TINY], in_tmp, capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "prevpos: error: the file system refused lightning_logs/default: Not a directory"
    assert (in_tmp / "lightning_logs").read_text() == "my notes"


def test_resuming_a_run_one_cannot_write_into_is_one_line(workspace, monkeypatch, capsys):
    """On a read-only mount, TensorBoard's writer thread printed a traceback amid the error line, whose file name was
    Python bytes (b'...'). Simulated: tests run as root, for whom chmod does not make a folder read-only."""
    monkeypatch.chdir(workspace)
    checkpoints = RUN / "checkpoints"
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != checkpoints)
    code, err = refused(["fit", "--resume", str(RUN), "--trainer.max_epochs=4"], workspace, capsys)
    assert code == 2 and err.strip() == (
        f"prevpos: error: --resume {RUN}: cannot write into {checkpoints} (read-only, or another user's), where the "
        "resumed run goes on writing its logs and checkpoints; copy the run somewhere you can write to and resume the "
        "copy")


@pytest.mark.parametrize("filename, named", [(b"run/events.out.tfevents.1", "run/events.out.tfevents.1"),
                                             (None, "a write")])
def test_a_refused_write_names_the_file_as_text(filename, named, monkeypatch, capsys):
    def read_only(argv):
        raise OSError(errno.EROFS, "Read-only file system", filename)

    monkeypatch.setattr("prevpos.lightning_cli.build_cli", read_only)
    with pytest.raises(SystemExit):
        main(["fit"])
    assert capsys.readouterr().err.strip() == f"prevpos: error: the file system refused {named}: Read-only file system"


def test_a_plugin_saved_in_the_working_directory_is_named_by_its_class_path(in_tmp, capsys):
    """The README's plugin saved as ./plugins/entropy.py (not in prevpos's own plugins/) was only "no plugin named
    'AttentionEntropy' (did you mean AttentionPatterns?)"."""
    (in_tmp / "plugins").mkdir()
    (in_tmp / "plugins" / "entropy.py").write_text("class AttentionEntropy:\n    pass\n")
    code, err = refused(["fit", "--trainer.callbacks+=AttentionEntropy"], in_tmp, capsys)
    assert code == 2 and "did you mean plugins.entropy.AttentionEntropy?" in err
