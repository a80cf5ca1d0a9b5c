"""argparse for the commands beyond LightningCLI's: a usage error is one line naming the command, as fit's are."""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, `prevpos: error: COMMAND: ...`, then exit 2, where argparse
    prints its usage block and its own message."""

    def error(self, message: str):
        command = self.prog.rsplit(" ", 1)[-1]
        print(f"prevpos: error: {command}: {message} (`{self.prog} --help` lists the options)", file=sys.stderr)
        sys.exit(2)
