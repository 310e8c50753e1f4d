"""Robot adapters behind one seam (:class:`theia_ros.types.RobotAdapter`): WidowX 250s
(Interbotix), Spot (bosdyn-client), the MuJoCo twin and the topic-fed dry run; ``registry``
builds the one a task config names. Adapters import their vendor SDKs lazily."""
