"""vam: video-action models for robots (JAX/Flax)."""

from setuptools import find_packages, setup

# Ranges known to resolve together (measured: jax 0.10.2, flax 0.12.8, mujoco 4.0.0, mujoco-mjx 3.17.0).
# Exact versions for reproducible installs live in requirements.lock (used by `make setup`).
INSTALL_REQUIRES = [
    "jax>=0.10.2,<0.11",
    "flax>=0.12.8,<0.13",
    "optax>=0.2.8,<0.3",
    "orbax-checkpoint>=0.12.8,<0.13",
    "grain>=0.2.18,<0.3",
    "tensorflow-datasets>=4.9.10,<4.10",
    "ml_collections>=1.1.0,<1.2",
    "mujoco>=4.0.0,<4.1",
    "mujoco-mjx>=3.17.0,<3.18",
    "warp-lang>=1.19.0,<1.20",
    "numpy>=2.0",
    "absl-py>=2.1",
    "tqdm>=4.66",
    "tensorboardX>=2.6",  # TensorBoard event files without TensorFlow
    "imageio>=2.34",
    "imageio-ffmpeg>=0.5",  # ships its own ffmpeg binary: preview videos need no system packages
    "h5py>=3.10",  # EgoDex pose files (data/egodex)
    "msgpack>=1.0",  # the policy server's wire format (vam/serve)
    "websockets>=13",  # the policy server and its client (vam/serve; the asyncio and sync APIs)
    "importlib_resources>=6",  # tensorflow-datasets imports it without declaring it
]

setup(
    name="vam",
    version="0.1.0",
    description="Video-action models for robots: MJX worlds, RLDS datasets, flow-matching policies in JAX.",
    packages=find_packages(include=["vam", "vam.*"]),
    python_requires=">=3.11",
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.11"],
        "tpu": ["jax[tpu]>=0.10.2,<0.11"],
    },
)
