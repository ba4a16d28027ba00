"""Running on a cluster: connecting to Ray, file leases for one-at-a-time work, fault injection for tests."""
