"""Recording demonstrations: keyboard teleop sessions and Spot's scripted drawer opening."""
