"""argparse for the commands beyond LightningCLI's: a usage error is one line naming the command, as fit's are."""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are `prevpos: error: COMMAND: ...`, then exit 2 (argparse prints its usage
    block first)."""

    def error(self, message: str):
        command = self.prog.rsplit(" ", 1)[-1]
        print(f"prevpos: error: {command}: {message} (`{self.prog} --help` lists the options)", file=sys.stderr)
        sys.exit(2)
