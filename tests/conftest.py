"""Test session set-up: 8 fake CPU devices, strict numpy semantics, persistent compile cache.

The environment variables must be set before jax is imported anywhere.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir", os.path.expanduser("~/.cache/gafu_jax_test_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_report_header(config):
    return f"jax {jax.__version__}, {jax.device_count()} devices ({jax.default_backend()})"
