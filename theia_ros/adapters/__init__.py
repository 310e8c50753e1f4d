"""Robot adapters (WidowX 250s, Spot, MuJoCo twin): one RobotAdapter seam, imported lazily."""
