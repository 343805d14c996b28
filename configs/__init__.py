"""The engine's configurations and data files, installed as the package ``engine.configs``.

TOML configurations (``default.toml`` the demo, ``ci.toml`` the tests, ``dsa110.toml`` the
telescope) and the data they name (``dsa110_stations.csv``, ``calibrators.csv``). Read them
through :data:`engine.config.CONFIG_DIR`, which finds them installed or in the source tree.
"""
