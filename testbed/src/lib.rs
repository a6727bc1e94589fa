//! Test bed for whittle's integration tests.
