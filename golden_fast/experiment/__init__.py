"""The paper's study at this machine's scale (`golden-fast experiment`), resumable part by part.

    from golden_fast.experiment import ExperimentConfig, quick_config, run_experiment
    run_experiment(quick_config(model="smollm2-135m", data="cf.json", out="runs/exp"))

Parts (config.PARTS, in order): lga, hybrid, cma, brute-proxy, brute-test (locating.py: which layer
each method chooses on the proxy facts, the hybrid from LGA's shortlist and trial edits, and the test
facts' own golden layer), editors (editors.py: each editor's test metrics at each chosen layer),
mass-batch, mass-sequential (mass.py: quality, time and memory as edits accumulate), report
(assemble.py, with the golden band of the test facts). runner.py runs them, skipping finished work.
"""

from golden_fast.experiment.config import PARTS, ExperimentConfig, quick_config
from golden_fast.experiment.runner import run_experiment

__all__ = ["PARTS", "ExperimentConfig", "quick_config", "run_experiment"]
