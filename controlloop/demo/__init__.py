"""``controlloop demo``: the production control loop against an emulated cluster.

- :mod:`controlloop.demo.cluster`: :class:`EmulatedCluster`, Collector and Actuator
  in simulated time, with token-level simulated vLLM replicas;
- :mod:`controlloop.demo.loadscript`: scenarios and their load scripts (YAML);
- :mod:`controlloop.demo.report`: plots and the Markdown summary.
"""
