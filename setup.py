"""keras-ssm: signed supermasks for Keras 3 (keep, hide or invert each frozen random weight)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="keras-ssm",
    version="0.1.0",
    description="Signed supermasks for Keras 3: masks over frozen random weights; fold; export.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8")
    if (HERE / "README.md").exists()
    else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_ssm", "keras_ssm.*"]),
    python_requires=">=3.11",
    # Ranges from the verified pins in requirements.txt (../shared/notes/stack.md).
    install_requires=[
        "keras>=3.15.1,<4",
        "tensorflow>=2.21,<2.22",
        "numpy>=2.0,<3",
        "tensorflow-datasets>=4.9.10,<5",
    ],
    extras_require={
        "export": [
            "tf2onnx>=1.17.0,<1.18",
            "onnx>=1.23,<2",
            "onnxruntime>=1.31.1,<2",
            "ai-edge-litert>=2.3,<3",
        ],
        "jax": ["jax>=0.10.2,<0.11", "jaxlib>=0.10.2,<0.11"],
        "tfmot": ["tf-keras>=2.21,<2.22", "tensorflow-model-optimization>=0.8.1,<0.9"],
        "hub": ["keras-hub>=0.32,<0.33"],
        "plots": ["matplotlib>=3.8"],
        "test": ["pytest>=9.2,<10"],
    },
    entry_points={"console_scripts": ["ssm=keras_ssm.cli:main"]},
)
