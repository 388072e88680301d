"""The task categories, one generator module each (``generate(rng, difficulty) -> Draft``).

They are registered by name in :data:`regrpo.tasks.suite.GENERATORS`.
"""
