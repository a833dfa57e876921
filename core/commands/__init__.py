"""CLI subcommands of ``python -m core``; each module registers one via ``add_parser``."""
