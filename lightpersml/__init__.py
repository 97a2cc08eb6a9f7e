"""LightPersML: the CLI and the one configuration module shared by flows, tasks and tests."""
