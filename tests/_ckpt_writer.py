"""Child of the SIGKILL test: saves training checkpoints back to back until it is killed.
Each save of step s carries pl_mean = s, so the test can tell which step a restored checkpoint holds."""
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from _train_common import init_host_state, make_config  # noqa: E402
from train.ckpt import Checkpoints  # noqa: E402
from train.parallel import make_mesh, put_replicated  # noqa: E402

cfg = make_config()
mesh = make_mesh()
state = init_host_state(cfg)
ck = Checkpoints(os.path.join(sys.argv[1], "ckpt"), keep=3)
step = 1
while True:
    tagged = put_replicated(state.replace(step=np.int32(step), pl_mean=np.float32(step)), mesh)
    ck.save(step, tagged, {"epoch": 0, "index": step}, cfg)
    step += 1
