"""The control loop: what a cycle observes, decides and asks the cluster to do (pure but for
the controller)."""
