from prevpos.cli import command_line

command_line()
