"""Rate limits: named limits in the policy (model.py), GCRA (gcra.py), the engines that keep
their state (engine.py in-process, redis_engine.py shared), and the answers (headers.py)."""
