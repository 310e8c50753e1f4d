"""theia-ros deploy side: control core, inference runtime, robot adapters, ROS 2 nodes, CLI.

Nothing here imports torch at module level: a robot running the onnxruntime or TensorRT
backend never needs it.
"""

__version__ = "0.1.0"
