"""The slow job example as a Python worker: {"steps": n, "step_ms": ms} runs
n steps, reports progress after each, stops when cancelled, and returns
{"steps_done": n}. Same behaviour as the Rust SlowJob in plugboard-examples."""
import json
import os
import sys
import time

try:
    from plugboard_worker import Cancelled, InvalidInput, Worker, run
except ImportError:  # running from a checkout: use the bundled SDK
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "sdk", "python"))
    from plugboard_worker import Cancelled, InvalidInput, Worker, run

HERE = os.path.dirname(os.path.abspath(__file__))


def _int(input, key, default, high):
    value = input.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidInput(f"{key} must be an integer from 0 to {high}")
    return value


class SlowJob(Worker):
    name = "slow_job"
    version = "0.1.0"
    streaming = True
    cancel = True
    with open(os.path.join(HERE, "schema.json")) as f:
        config_schema = json.load(f)

    def execute(self, input, ctx):
        if not isinstance(input, dict):
            raise InvalidInput("input must be an object")
        steps = _int(input, "steps", 5, 10000)
        step_ms = _int(input, "step_ms", self.config.get("step_ms", 100), 60000)
        for i in range(steps):
            ctx.check_cancelled()
            left = step_ms
            while left > 0:
                chunk = min(left, 10)
                time.sleep(chunk / 1000.0)
                left -= chunk
                ctx.check_cancelled()
            ctx.progress((i + 1) / steps, f"step {i + 1} of {steps}")
        return {"steps_done": steps}


if __name__ == "__main__":
    run(SlowJob())
