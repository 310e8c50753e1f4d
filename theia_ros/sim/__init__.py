"""MuJoCo twin of the WidowX 250s door-opening task (scene, physics, success, scripted expert)."""
