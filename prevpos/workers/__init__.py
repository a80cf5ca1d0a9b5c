"""The processes beside training: figure workers and the analysis process, and how they are spawned. Importable
without torch or Lightning (a spawned worker imports the package of every function it is sent)."""
