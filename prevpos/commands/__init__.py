"""The commands beyond LightningCLI\x27s fit/validate/test."""
