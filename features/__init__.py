"""Customer features: pure functions of silver DataFrames and an `as_of` date."""
