"""Learning-side dataset tools: rosbag2 import and episode viewing (the format itself lives in
``theia_ros.dataset`` so robot recorders can write it without ``training``)."""
