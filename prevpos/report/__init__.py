"""`python -m prevpos report`: read a run, draw its emergence timeline, fill in the algorithm, write HTML."""
