"""Command-line interface: one small module per command (parse -> call core -> print)."""
