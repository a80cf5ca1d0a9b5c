import sys

from prevpos.cli import command_line

# Parsers that jsonargparse builds on the fly (`fit --trainer.callbacks.help NAME`) name the program after argv[0],
# which `python -m` sets to this file's path: their usage line read "__main__.py".
sys.argv[0] = "python -m prevpos"
command_line()
