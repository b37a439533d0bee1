"""Schedules serialize through Keras: built-in and user-registered schedules reload, also in a new process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import pytest

import tfprune
from tfprune import schedules

CUSTOM = textwrap.dedent('''
    import keras
    import tensorflow as tf
    import tfprune

    @keras.saving.register_keras_serializable()
    class EveryOtherStep(tfprune.PruningSchedule):
        """Prunes to `target` on even steps."""

        def __init__(self, target):
            self.target = target

        def __call__(self, step):
            even = tf.equal(tf.math.floormod(tf.cast(step, tf.int64), 2), 0)
            return even, tf.constant(self.target, tf.float32)

        def get_config(self):
            return {"target": self.target}
''')

SAVE = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    import tfprune
    from custom_schedule import EveryOtherStep

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, name="d"), keras.layers.Dense(2)])
    pruned = tfprune.prune_low_magnitude(model, pruning_schedule=EveryOtherStep(0.75))
    pruned.compile("sgd", "mse")
    x, y = np.ones((8, 8), "float32"), np.zeros((8, 2), "float32")
    pruned.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    pruned.save(sys.argv[1])
''')

LOAD = textwrap.dedent('''
    import sys
    import numpy as np
    import keras
    import custom_schedule  # registers EveryOtherStep
    import tfprune

    loaded = keras.saving.load_model(sys.argv[1])
    wrapper = tfprune.collect_wrappers(loaded)[0]
    schedule = wrapper.pruning_schedule
    assert type(schedule).__name__ == "EveryOtherStep" and schedule.target == 0.75, schedule
    assert int(wrapper.pruning_step.numpy()) == 2
    loaded.compile("sgd", "mse")
    x, y = np.ones((8, 8), "float32"), np.zeros((8, 2), "float32")
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[tfprune.UpdatePruningStep()])
    assert int(wrapper.pruning_step.numpy()) == 4
    mask = wrapper.masks[0].numpy()
    assert int((mask == 0).sum()) == 96, int((mask == 0).sum())
    print("ok")
''')


def _run(script: str, cwd, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(cwd)] + sys.path), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_model_pruned_with_a_user_registered_schedule_reloads_in_a_fresh_interpreter(tmp_path):
    (tmp_path / "custom_schedule.py").write_text(CUSTOM)
    path = str(tmp_path / "pruned.keras")
    saved = _run(SAVE, tmp_path, path)
    assert saved.returncode == 0, saved.stderr[-3000:]
    loaded = _run(LOAD, tmp_path, path)
    assert loaded.returncode == 0 and "ok" in loaded.stdout, loaded.stderr[-3000:]


def test_builtin_schedules_round_trip_through_keras_serialization():
    for schedule in (tfprune.ConstantSparsity(0.5, 10, end_step=90, frequency=5),
                     tfprune.PolynomialDecay(0.1, 0.8, 0, 100, power=2, frequency=10)):
        config = schedules.serialize(schedule)
        assert config["registered_name"].startswith("tfprune>")
        assert schedules.deserialize(config) == schedule
        assert keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule)) == schedule


def test_the_earlier_serialized_form_still_loads():
    old = {"class_name": "PolynomialDecay",
           "config": {"initial_sparsity": 0.0, "final_sparsity": 0.5, "begin_step": 0, "end_step": 10}}
    assert schedules.deserialize(old) == tfprune.PolynomialDecay(0.0, 0.5, 0, 10)


def test_unknown_schedule_names_the_fix():
    with pytest.raises(ValueError, match="register_keras_serializable"):
        schedules.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(ValueError, match="register_keras_serializable"):
        schedules.deserialize({"module": "nowhere", "class_name": "Nope", "config": {}, "registered_name": "x>Nope"})
    with pytest.raises(ValueError, match="class_name"):
        schedules.deserialize(["not", "a", "dict"])
