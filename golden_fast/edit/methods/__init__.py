"""The built-in editors, one module each. Every module here registers its editor(s) with
`golden_fast.edit.registry` when imported; the registry imports them all on first use, so a new
editor is a new module in this folder and nothing else."""
