"""Test instrumentation put into a notebook before its train cell (code as text, run in the kernel)."""

# Records every optimiser step the Trainer takes (``StepProbe.steps``): a resumed run must not repeat one.
STEP_PROBE = '''
from transformers import TrainerCallback

class StepProbe(TrainerCallback):
    steps = []
    def on_step_end(self, args, state, control, **kwargs):
        StepProbe.steps.append(state.global_step)

trainer.add_callback(StepProbe())
'''
